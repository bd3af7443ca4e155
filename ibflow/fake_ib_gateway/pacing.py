"""IBKR's historical-data pacing rules, enforced by the fake as IBKR enforces them.

A request is refused (error 162, pacing violation) when it would make more than 60 requests
within ten minutes (`BID_ASK` counts twice), repeats an identical request made less than 15 s
earlier, or would be the sixth request for the same contract, exchange and data type within
2 s. Only served requests are remembered: a refused request costs nothing. The limits are per
gateway (IBKR paces the session, not the API client).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

from .clock import Clock

MAX_REQUESTS = 60
REQUEST_WINDOW = 600.0
IDENTICAL_WINDOW = 15.0
SAME_CONTRACT_LIMIT = 6
SAME_CONTRACT_WINDOW = 2.0


@dataclass(frozen=True)
class PacedRequest:
    """What the rules look at in one historical request."""

    identity: Hashable  # every request field except the request id
    series: Hashable  # contract, exchange and data type
    weight: int = 1


@dataclass(frozen=True)
class _Served:
    at: float
    request: PacedRequest


class HistoricalPacing:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._served: deque[_Served] = deque()

    def violation(self, request: PacedRequest) -> str | None:
        """Why `request` breaks a rule, or None after recording it as served."""
        now = self._clock()
        while self._served and now - self._served[0].at >= REQUEST_WINDOW:
            self._served.popleft()
        if sum(s.request.weight for s in self._served) + request.weight > MAX_REQUESTS:
            return f"more than {MAX_REQUESTS} requests within {REQUEST_WINDOW:.0f} s"
        if any(s.request.identity == request.identity and now - s.at < IDENTICAL_WINDOW for s in self._served):
            return f"identical request within {IDENTICAL_WINDOW:.0f} s"
        same_series = sum(
            1 for s in self._served if s.request.series == request.series and now - s.at < SAME_CONTRACT_WINDOW
        )
        if same_series + 1 >= SAME_CONTRACT_LIMIT:
            return f"{SAME_CONTRACT_LIMIT} requests for the same contract within {SAME_CONTRACT_WINDOW:.0f} s"
        self._served.append(_Served(now, request))
        return None
