"""IBKR's historical-data pacing rules, enforced by ibflow before a request is sent.

IBKR answers a request that breaks a rule with error 162 ("pacing violation"), or with
silence, and repeated violations can get the session disconnected. So every historical
request first takes a slot here:
- at most 60 requests within 10 minutes (`BID_ASK` requests count twice: `cost=2`);
- no identical request within 15 s;
- no 6 requests for the same contract, exchange and data type within 2 s;
- at most 50 requests open at once (weighted like the 10-minute budget).
A request that does get error 162 for pacing pauses all historical requests, for 15 s
after the first violation and twice as long after each further one in a row.

Waiting is bounded: a request whose slot would come later than `max_wait` seconds
fails at once with `PacingDelayTooLong` instead of stalling its caller.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from services.signals import metrics
from services.signals.market_data.ibkr.errors import PACING_OR_HMDS

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class PacingRules:
    max_requests: int = 60
    window_seconds: float = 600.0
    identical_seconds: float = 15.0
    per_contract_max: int = 5
    per_contract_seconds: float = 2.0
    max_open: int = 50
    violation_pause_seconds: float = 15.0
    violation_pause_max_seconds: float = 600.0


class PacingDelayTooLong(Exception):
    """The request would have to wait longer than its caller allows."""

    def __init__(self, wait_seconds: float, reason: str, code: int | None = None) -> None:
        super().__init__(f"historical request would wait {wait_seconds:.1f} s: {reason}")
        self.wait_seconds = wait_seconds
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class _Sent:
    at: float
    request_key: Hashable
    contract_key: Hashable
    cost: int


@dataclass(frozen=True)
class _Wait:
    seconds: float
    reason: str
    code: int | None = None


class PacingLimiter:
    """`clock` is monotonic seconds and `sleep` waits on it; tests pass a manual pair."""

    def __init__(self, rules: PacingRules = PacingRules(), *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.rules = rules
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[_Sent] = deque()
        self._open = 0
        self._paused_until = float("-inf")
        self._violations_in_a_row = 0
        self._released = asyncio.Event()

    @property
    def open_cost(self) -> int:
        return self._open

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    def used_in_window(self) -> int:
        self._forget_old(self._clock())
        return sum(s.cost for s in self._sent)

    def status(self) -> dict[str, float | int]:
        return {
            "requests_in_window": self.used_in_window(),
            "window_seconds": self.rules.window_seconds,
            "max_requests": self.rules.max_requests,
            "open": self._open,
            "paused_for_seconds": round(self.paused_for(), 1),
            "violations_in_a_row": self._violations_in_a_row,
        }

    @asynccontextmanager
    async def acquire(
        self, request_key: Hashable, contract_key: Hashable, cost: int = 1, *, max_wait: float | None = None
    ) -> AsyncIterator[None]:
        """Hold a slot for one historical request while the block runs (the request is
        open until the block ends). `request_key` identifies identical requests,
        `contract_key` the contract/exchange/data type."""
        if cost > self.rules.max_open or cost > self.rules.max_requests:
            raise ValueError(f"a request of cost {cost} can never be paced")
        started = self._clock()
        while True:
            waited = self._clock() - started
            wait = self._time_wait(request_key, contract_key, cost)
            if wait:
                if max_wait is not None and waited + wait.seconds > max_wait:
                    raise PacingDelayTooLong(wait.seconds, wait.reason, wait.code)
                metrics.PACING_WAIT.labels("rate").observe(wait.seconds)
                await self._sleep(wait.seconds)
                continue
            if self._open + cost > self.rules.max_open:
                remaining = None if max_wait is None else max_wait - waited
                if remaining is not None and remaining <= 0:
                    raise PacingDelayTooLong(0.0, f"{self.rules.max_open} historical requests are open")
                released = self._released
                waiting_since = self._clock()
                try:
                    await asyncio.wait_for(released.wait(), remaining)
                except TimeoutError:
                    raise PacingDelayTooLong(
                        remaining or 0.0, f"{self.rules.max_open} historical requests are open"
                    ) from None
                metrics.PACING_WAIT.labels("open").observe(self._clock() - waiting_since)
                continue
            break
        self._sent.append(_Sent(self._clock(), request_key, contract_key, cost))
        self._open += cost
        try:
            yield
        finally:
            self._open -= cost
            self._released.set()
            self._released = asyncio.Event()

    def record_violation(self) -> float:
        """IBKR said 162 (pacing violation): pause every historical request. Returns the pause."""
        self._violations_in_a_row += 1
        metrics.PACING_VIOLATIONS.inc()
        pause = min(
            self.rules.violation_pause_max_seconds,
            self.rules.violation_pause_seconds * 2 ** (self._violations_in_a_row - 1),
        )
        self._paused_until = max(self._paused_until, self._clock() + pause)
        return pause

    def record_success(self) -> None:
        self._violations_in_a_row = 0

    def _forget_old(self, now: float) -> None:
        while self._sent and now - self._sent[0].at >= self.rules.window_seconds:
            self._sent.popleft()

    def _time_wait(self, request_key: Hashable, contract_key: Hashable, cost: int) -> _Wait | None:
        now = self._clock()
        self._forget_old(now)
        rules = self.rules
        waits: list[_Wait] = []
        if now < self._paused_until:
            waits.append(_Wait(self._paused_until - now, "paused after an IBKR pacing violation", PACING_OR_HMDS))
        excess = sum(s.cost for s in self._sent) + cost - rules.max_requests
        if excess > 0:
            freed = 0
            for sent in self._sent:
                freed += sent.cost
                if freed >= excess:
                    waits.append(_Wait(
                        sent.at + rules.window_seconds - now,
                        f"{rules.max_requests} historical requests within {rules.window_seconds:.0f} s",
                    ))
                    break
        identical = [s.at for s in self._sent if s.request_key == request_key and now - s.at < rules.identical_seconds]
        if identical:
            waits.append(_Wait(max(identical) + rules.identical_seconds - now,
                               f"identical request within {rules.identical_seconds:.0f} s"))
        same_contract = [
            s.at for s in self._sent if s.contract_key == contract_key and now - s.at < rules.per_contract_seconds
        ]
        if len(same_contract) >= rules.per_contract_max:
            waits.append(_Wait(
                same_contract[-rules.per_contract_max] + rules.per_contract_seconds - now,
                f"{rules.per_contract_max + 1} requests for one contract within {rules.per_contract_seconds:.0f} s",
            ))
        return max(waits, key=lambda w: w.seconds) if waits else None
