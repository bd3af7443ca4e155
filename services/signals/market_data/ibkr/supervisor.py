"""The connection supervisor: one loop that owns the IB gateway connection.

States:
- `stopped`     not started, stopped, or gave up after IBKR_MAX_RECONNECT_ATTEMPTS;
- `connecting`  an attempt is under way (socket, API handshake, first heartbeat);
- `ready`       connected, IBKR reachable, requests are sent;
- `degraded`    connected, but IB Gateway lost IBKR (1100), a data farm is broken
                (2103/2105/2157), or the gateway stopped answering requests;
- `backing_off` waiting (jittered exponential backoff) before the next attempt.

connecting -> ready (connected) | backing_off (attempt failed) | connecting (next client
id after 326); ready <-> degraded (1100 / 1101 / 1102, farm broken / OK, unanswered
requests / an answer); ready | degraded -> backing_off (socket lost, heartbeat
unanswered); backing_off -> connecting; any -> stopped (stop, or attempts exhausted).

Only the loop reconnects: `ib_async` events (`disconnectedEvent`, `errorEvent`) merely
record what happened and wake it, so a burst of events (IBKR's nightly reset sends
several) can never start a second reconnect loop. Every transition is recorded with its
time, reason and IBKR code. Outages inside IBKR's maintenance windows are logged at INFO,
and at ERROR once they outlast the window by the grace period.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from services.signals import metrics
from services.signals.market_data.ibkr import errors
from services.signals.market_data.ibkr.errors import IbMessage
from services.signals.market_data.ibkr.maintenance import MaintenanceCalendar, Outage
from services.signals.market_data.models import ProviderHealth, ProviderState

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]
WallClock = Callable[[], datetime.datetime]
Sleep = Callable[[float], Awaitable[None]]
TRANSITIONS_KEPT = 200
TRANSITIONS_IN_HEALTH = 8


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class SupervisorState(StrEnum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    READY = "ready"
    DEGRADED = "degraded"
    BACKING_OFF = "backing_off"


class FailureKind(StrEnum):
    UNREACHABLE = "unreachable"
    NO_HANDSHAKE = "no_handshake"
    UNAUTHORIZED = "unauthorized"
    CLIENT_ID_IN_USE = "client_id_in_use"
    CONNECTION_LOST = "connection_lost"


class ConnectFailed(Exception):
    """A connection attempt failed; `message` says why in words, `code` is IBKR's if any."""

    def __init__(self, kind: FailureKind, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code


class NotReady(Exception):
    """A request cannot be sent now (and the caller should not wait any longer)."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Gateway(Protocol):
    """What the supervisor drives: the `ib_async` client in production, a fake in tests."""

    async def connect(self, client_id: int) -> None:
        """Connect within its own timeout; raises `ConnectFailed`."""

    def disconnect(self) -> None:
        """Close the connection without reporting it as lost."""

    async def heartbeat(self) -> None:
        """One round trip (`reqCurrentTime`) within its own timeout; raises on failure."""


@dataclass(frozen=True)
class Transition:
    at: datetime.datetime
    from_state: SupervisorState
    to_state: SupervisorState
    reason: str
    code: int | None = None

    def as_detail(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "from": self.from_state.value, "to": self.to_state.value,
                "reason": self.reason, "code": self.code}


@dataclass(frozen=True)
class ReconnectPolicy:
    initial_delay: float = 1.0
    max_delay: float = 60.0
    max_attempts: int = 0
    """Failed attempts in a row before giving up; 0 = never give up."""

    def delay(self, failures: int, rng: Callable[[], float]) -> float:
        """Exponential in the failures so far, jittered into [half, full] so that many
        clients of one gateway do not come back in lockstep."""
        ceiling = min(self.max_delay, self.initial_delay * 2 ** max(0, failures - 1))
        return ceiling / 2 + rng() * ceiling / 2


@dataclass(frozen=True)
class SilencePolicy:
    """After `limit` requests in a row got no answer, requests fail fast for `pause` s."""

    limit: int = 2
    pause: float = 30.0


class ConnectionSupervisor:
    def __init__(
        self,
        gateway: Gateway,
        *,
        endpoint: str,
        client_ids: Sequence[int],
        reconnect: ReconnectPolicy = ReconnectPolicy(),
        silence: SilencePolicy = SilencePolicy(),
        heartbeat_interval: float = 30.0,
        maintenance: MaintenanceCalendar | None = None,
        overrun_grace: float = 900.0,
        clock: WallClock = utc_now,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not client_ids:
            raise ValueError("at least one client id is needed")
        self._gateway = gateway
        self._endpoint = endpoint
        self._client_ids = tuple(client_ids)
        self._reconnect = reconnect
        self._silence = silence
        self._heartbeat_interval = heartbeat_interval
        self._maintenance = maintenance or MaintenanceCalendar()
        self._overrun_grace = datetime.timedelta(seconds=overrun_grace)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._ready_hooks: list[Hook] = []
        self._data_lost_hooks: list[Hook] = []

        self.transitions: deque[Transition] = deque(maxlen=TRANSITIONS_KEPT)
        self._state = SupervisorState.STOPPED
        metrics.ibkr_state(self._state.value)
        self._reason = "not started"
        self._code: int | None = None
        self._since = clock()
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._hook_tasks: set[asyncio.Task[None]] = set()

        self.client_id: int | None = None
        self._preferred = 0
        self._failures = 0
        self._last_failure: ConnectFailed | None = None
        self._next_attempt_at: float | None = None
        self._socket_up = False
        self._lost_reason: str | None = None
        self._probe_requested = False
        self._last_activity = 0.0
        self._connectivity_lost: IbMessage | None = None
        self._farms_down: dict[str, IbMessage] = {}
        self._unanswered = 0
        self._silent_until: float | None = None
        self._outage: Outage | None = None
        self._outage_started: datetime.datetime | None = None
        self._overrun_alerted = False

    # --- wiring ----------------------------------------------------------------------

    def add_ready_hook(self, hook: Hook) -> None:
        """Run after every successful (re)connect: re-qualify, re-subscribe."""
        self._ready_hooks.append(hook)

    def add_data_lost_hook(self, hook: Hook) -> None:
        """Run after 1101 (connectivity restored, data lost): re-fetch, re-subscribe."""
        self._data_lost_hooks.append(hook)

    @property
    def state(self) -> SupervisorState:
        return self._state

    @property
    def states(self) -> list[SupervisorState]:
        """The states entered so far, in order (for tests and the health detail)."""
        return [t.to_state for t in self.transitions]

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="ibkr-connection-supervisor")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._hook_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self._socket_up or self._state is SupervisorState.CONNECTING:
            self._gateway.disconnect()
        self._socket_up = False
        self._transition(SupervisorState.STOPPED, "stopped")

    # --- what the gateway reports ------------------------------------------------------

    def connection_lost(self, reason: str = "the IB gateway closed the connection") -> None:
        """`disconnectedEvent`: only meaningful while connected (a failing attempt
        reports its own failure)."""
        if self._socket_up and self._lost_reason is None:
            self._lost_reason = reason
            self._wake.set()

    def ib_message(self, message: IbMessage) -> None:
        """A connection-wide message (`reqId -1`)."""
        code = message.code
        if code in errors.CONNECTIVITY_LOST:
            self._connectivity_lost = message
        elif code in errors.CONNECTIVITY_RESTORED:
            self._connectivity_lost = None
            if code == errors.RESTORED_DATA_LOST:
                self._spawn_hooks(self._data_lost_hooks, "re-fetch after 1101")
        elif code in errors.FARM_BROKEN:
            self._farms_down[errors.farm_name(message.message)] = message
        elif code in errors.FARM_OK or code in errors.FARM_INACTIVE:
            if self._farms_down.pop(errors.farm_name(message.message), None) is None:
                return
        else:
            # During an attempt, its failure speaks for the messages that caused it.
            if self._socket_up and not errors.is_warning(code):
                log.warning("IBKR %d (%s): %s", code, message.meaning, message.message,
                            extra={"ibkr_code": code, "meaning": message.meaning, "endpoint": self._endpoint})
            return
        self._reassess(message)

    def request_answered(self) -> None:
        self._last_activity = asyncio.get_running_loop().time()
        if self._unanswered or self._silent_until is not None:
            self._unanswered = 0
            self._silent_until = None
            self._reassess(None, "the IB gateway answers requests again")

    def request_unanswered(self, what: str, timeout: float) -> None:
        """A request timed out: probe the connection now; after `limit` in a row stop
        sending requests for a while."""
        self._unanswered += 1
        self._probe_requested = True
        self._wake.set()
        if self._unanswered >= self._silence.limit:
            newly_silent = self._silent_until is None
            self._silent_until = asyncio.get_running_loop().time() + self._silence.pause
            if not newly_silent:
                return
            self._reassess(None, f"{self._unanswered} requests in a row got no answer within {timeout:g} s "
                                 f"(last: {what}); requests paused for {self._silence.pause:g} s")

    # --- what requests ask -------------------------------------------------------------

    async def wait_ready(self, timeout: float) -> None:
        """Return when a request may be sent; raise `NotReady` at once when that cannot
        happen within `timeout`, or when the wait runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            blocked = self._blocked(deadline)
            if blocked is None:
                return
            must_fail, problem = blocked
            remaining = deadline - loop.time()
            if must_fail or remaining <= 0:
                raise problem
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                still = self._blocked(deadline)
                if still is None:
                    return
                raise still[1] from None

    async def first_attempt(self, timeout: float) -> bool:
        """Wait (at most `timeout`) for the first connection attempt since `start` to end;
        whether it connected."""
        async with asyncio.timeout(timeout):
            while self._state is SupervisorState.CONNECTING or (
                self._state is SupervisorState.STOPPED and self._task is not None and not self._task.done()
            ):
                await self._changed.wait()
        return self._socket_up

    def _blocked(self, deadline: float) -> tuple[bool, NotReady] | None:
        now = asyncio.get_running_loop().time()
        where = f"IB gateway at {self._endpoint}"
        match self._state:
            case SupervisorState.READY:
                return None
            case SupervisorState.DEGRADED:
                if self._connectivity_lost is not None:
                    lost = self._connectivity_lost
                    return False, NotReady(f"{where}: {lost.meaning}", lost.code)
                if self._silent_until is not None and now < self._silent_until:
                    return True, NotReady(
                        f"{where} is not answering requests ({self._unanswered} in a row unanswered); "
                        f"requests paused for {self._silent_until - now:.0f} s more", None)
                return None
            case SupervisorState.CONNECTING:
                failure = self._last_failure
                if failure is None:
                    return False, NotReady(f"not connected to {where} yet: {self._reason}", errors.NOT_CONNECTED)
                # Mid-way through another attempt, what stands in the way is the last failure.
                return False, NotReady(
                    f"not connected to {where}: {failure.message} (trying again)",
                    failure.code if failure.code is not None else errors.NOT_CONNECTED,
                )
            case SupervisorState.BACKING_OFF:
                failure = self._last_failure
                problem = NotReady(
                    f"not connected to {where}: {self._reason}",
                    failure.code if failure and failure.code is not None else errors.NOT_CONNECTED,
                )
                return (self._next_attempt_at is None or self._next_attempt_at >= deadline), problem
            case _:
                starting = self._task is not None and not self._task.done()
                return not starting, NotReady(f"not connected to {where}: {self._reason}", errors.NOT_CONNECTED)

    # --- health ------------------------------------------------------------------------

    def provider_state(self) -> ProviderState:
        match self._state:
            case SupervisorState.READY:
                return "connected"
            case SupervisorState.DEGRADED:
                only_farms = self._connectivity_lost is None and self._silent_until is None
                return "connected" if only_farms else "disconnected"
            case _:
                failure = self._last_failure
                if failure is not None and failure.kind is FailureKind.UNAUTHORIZED:
                    return "unauthorized"
                return "disconnected"

    def health(self) -> ProviderHealth:
        detail: dict[str, Any] = {
            "supervisor_state": self._state.value,
            "since": self._since.isoformat(),
            "reason": self._reason,
            "endpoint": self._endpoint,
            "client_id": self.client_id,
            "client_ids": list(self._client_ids),
        }
        code = self._code
        if code is None and self._last_failure is not None and not self._socket_up:
            code = self._last_failure.code
        if code is not None:
            detail["code"] = code
            detail["meaning"] = errors.meaning(code)
        if self._state is SupervisorState.DEGRADED:
            detail["degraded"] = True
        if self._failures:
            detail["failed_attempts"] = self._failures
        if self._state is SupervisorState.BACKING_OFF and self._next_attempt_at is not None:
            delay = self._next_attempt_at - asyncio.get_running_loop().time()
            detail["next_attempt_in_seconds"] = round(max(0.0, delay), 1)
        if self._last_failure is not None:
            detail["last_failure"] = {"kind": self._last_failure.kind.value, "message": self._last_failure.message,
                                      "code": self._last_failure.code}
        if self._connectivity_lost is not None:
            detail["connectivity"] = self._connectivity_lost.as_detail()
        if self._farms_down:
            detail["farms_down"] = {farm: m.as_detail() for farm, m in sorted(self._farms_down.items())}
        if self._unanswered:
            detail["unanswered_requests"] = self._unanswered
        if self._outage is not None:
            detail["expected_outage"] = {**self._outage.as_detail(), "overran": self._overrun_alerted}
        detail["transitions"] = [t.as_detail() for t in list(self.transitions)[-TRANSITIONS_IN_HEALTH:]]
        return ProviderHealth(state=self.provider_state(), detail=detail)

    # --- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                client_id = await self._connect_round()
            except ConnectFailed as failure:
                self._failures += 1
                self._last_failure = failure
                if self._reconnect.max_attempts and self._failures >= self._reconnect.max_attempts:
                    self._transition(
                        SupervisorState.STOPPED,
                        f"gave up after {self._failures} failed attempts (IBKR_MAX_RECONNECT_ATTEMPTS): "
                        f"{failure.message}",
                        failure.code,
                    )
                    return
                await self._back_off(failure.message, failure.code)
                continue
            self._connected(client_id)
            reason = await self._watch()
            self._socket_up = False
            self._failures = 1
            self._last_failure = ConnectFailed(FailureKind.CONNECTION_LOST, reason)
            await self._back_off(reason, None)

    async def _connect_round(self) -> int:
        """Try the preferred client id, then the others after error 326."""
        ids = self._client_ids[self._preferred:] + self._client_ids[:self._preferred]
        for position, client_id in enumerate(ids):
            self._transition(SupervisorState.CONNECTING, f"connecting as client id {client_id}")
            # What IBKR says during the attempt (farm status) counts for the new connection.
            self._connectivity_lost = None
            self._farms_down.clear()
            try:
                await self._gateway.connect(client_id)
            except ConnectFailed as failure:
                if failure.kind is FailureKind.CLIENT_ID_IN_USE and position + 1 < len(ids):
                    log.warning("IBKR %d (%s): client id %d is taken, trying client id %d",
                                errors.CLIENT_ID_IN_USE, errors.meaning(errors.CLIENT_ID_IN_USE),
                                client_id, ids[position + 1],
                                extra={"ibkr_code": errors.CLIENT_ID_IN_USE, "client_id": client_id})
                    continue
                if failure.kind is FailureKind.CLIENT_ID_IN_USE and len(ids) > 1:
                    raise ConnectFailed(
                        FailureKind.CLIENT_ID_IN_USE,
                        f"client ids {', '.join(map(str, self._client_ids))} are all in use by other API "
                        f"connections (IBKR {errors.CLIENT_ID_IN_USE})",
                        errors.CLIENT_ID_IN_USE,
                    ) from failure
                raise
            self._preferred = self._client_ids.index(client_id)
            return client_id
        raise AssertionError("unreachable: the loop returns or raises")

    def _connected(self, client_id: int) -> None:
        loop = asyncio.get_running_loop()
        self.client_id = client_id
        self._socket_up = True
        self._lost_reason = None
        self._probe_requested = False
        self._last_activity = loop.time()
        self._failures = 0
        self._last_failure = None
        self._next_attempt_at = None
        self._unanswered = 0
        self._silent_until = None
        self._reassess(None, f"connected to {self._endpoint} as client id {client_id}")
        self._spawn_hooks(self._ready_hooks, "after connect")

    async def _back_off(self, reason: str, code: int | None) -> None:
        self._mark_outage_start()
        delay = self._reconnect.delay(self._failures, self._rng)
        self._next_attempt_at = asyncio.get_running_loop().time() + delay
        self._transition(SupervisorState.BACKING_OFF, f"{reason}; next attempt in {delay:.1f} s", code)
        self._check_overrun()
        await self._sleep(delay)

    async def _watch(self) -> str:
        """Wait while connected; heartbeat when idle; return why the connection ended."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._heartbeat_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._lost_reason is not None:
                return self._lost_reason
            self._check_overrun()
            idle = loop.time() - self._last_activity
            if not self._probe_requested and idle < self._heartbeat_interval:
                continue
            self._probe_requested = False
            try:
                await self._gateway.heartbeat()
            except (TimeoutError, ConnectionError, OSError) as exc:
                if self._lost_reason is not None:
                    return self._lost_reason
                self._gateway.disconnect()
                return f"heartbeat (reqCurrentTime) failed: {type(exc).__name__} {exc}".strip()
            self._last_activity = loop.time()

    def _spawn_hooks(self, hooks: list[Hook], label: str) -> None:
        for hook in hooks:
            task = asyncio.get_running_loop().create_task(self._run_hook(hook, label))
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_tasks.discard)

    @staticmethod
    async def _run_hook(hook: Hook, label: str) -> None:
        try:
            await hook()
        except Exception:
            log.exception("IBKR %s: %s failed", label, getattr(hook, "__name__", hook))

    # --- state bookkeeping -------------------------------------------------------------

    def _reassess(self, message: IbMessage | None, reason: str | None = None) -> None:
        """Ready or degraded, from what is known while the socket is up."""
        if not self._socket_up:
            return
        if self._connectivity_lost is not None or self._silent_until is not None or self._farms_down:
            self._mark_outage_start()
        if self._connectivity_lost is not None:
            lost = self._connectivity_lost
            self._transition(SupervisorState.DEGRADED, lost.describe(), lost.code)
        elif self._silent_until is not None:
            self._transition(SupervisorState.DEGRADED, reason or "the IB gateway does not answer requests", None)
        elif self._farms_down:
            farms = ", ".join(f"{farm} ({m.code})" for farm, m in sorted(self._farms_down.items()))
            first = next(iter(self._farms_down.values()))
            self._transition(SupervisorState.DEGRADED, f"data farm connection broken: {farms}", first.code)
        else:
            text = message.describe() if message is not None else (reason or "all clear")
            self._transition(SupervisorState.READY, text, message.code if message is not None else None)

    def _transition(self, to: SupervisorState, reason: str, code: int | None = None) -> None:
        if to is self._state and reason == self._reason:
            return
        now = self._clock()
        transition = Transition(now, self._state, to, reason, code)
        self.transitions.append(transition)
        self._state, self._reason, self._code = to, reason, code
        if to is not transition.from_state:
            self._since = now
            metrics.ibkr_state(to.value, transition.from_state.value)
        if to is SupervisorState.READY:
            self._end_outage()
        self._log(transition)
        self._changed.set()
        self._changed = asyncio.Event()

    def _log(self, transition: Transition) -> None:
        extra = {"ibkr_state": transition.to_state.value, "ibkr_previous_state": transition.from_state.value,
                 "ibkr_code": transition.code, "endpoint": self._endpoint}
        if transition.code is not None:
            extra["meaning"] = errors.meaning(transition.code)
        text = f"IBKR connection {transition.from_state.value} -> {transition.to_state.value}: {transition.reason}"
        match transition.to_state:
            case SupervisorState.READY | SupervisorState.CONNECTING:
                log.info(text, extra=extra)
            case SupervisorState.STOPPED:
                (log.info if transition.reason == "stopped" else log.error)(text, extra=extra)
            case _ if self._outage is not None and not self._overrun_alerted:
                log.info(f"{text} (expected: {self._outage.name} until {self._outage.end.isoformat()})",
                         extra={**extra, "expected_outage": self._outage.name})
            case _:
                log.warning(text, extra=extra)

    def _mark_outage_start(self) -> None:
        if self._outage_started is None:
            self._outage_started = self._clock()
            self._outage = self._maintenance.outage_at(self._outage_started)

    def _end_outage(self) -> None:
        if self._outage_started is not None and self._outage is not None:
            log.info("IBKR outage during %s ended after %.0f s", self._outage.name,
                     (self._clock() - self._outage_started).total_seconds())
        self._outage_started = None
        self._outage = None
        self._overrun_alerted = False

    def _check_overrun(self) -> None:
        outage = self._outage
        if outage is None or self._overrun_alerted:
            return
        now = self._clock()
        if now > outage.end + self._overrun_grace:
            self._overrun_alerted = True
            minutes = (now - outage.end).total_seconds() / 60
            log.error(
                "IBKR outage overran the %s (ended %s) by %.0f min: %s",
                outage.name, outage.end.isoformat(), minutes, self._reason,
                extra={"ibkr_state": self._state.value, "expected_outage": outage.name, "ibkr_code": self._code},
            )
