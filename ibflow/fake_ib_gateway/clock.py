"""Time in the fake: an injectable monotonic clock, and the replay's wall clock built on it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

Clock = Callable[[], float]
"""Seconds on a monotonic scale (`time.monotonic` in production)."""

EXCHANGE_ZONE = ZoneInfo("America/New_York")
MARKET_CLOSE = time(16, 0)


class ManualClock:
    """A clock that only moves when told to (for tests)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ReplayClock:
    """The replay's wall time: the data's last date at the New York close, running with `clock`.

    The sample data ends years ago, so "now" for the fake is the end of its last session;
    clients that ask for the current time and then for bars ending now get data.
    """

    def __init__(self, clock: Clock, replay_date: date) -> None:
        self._clock = clock
        self._origin = clock()
        self._start = datetime.combine(replay_date, MARKET_CLOSE, EXCHANGE_ZONE)

    @property
    def replay_date(self) -> date:
        return self._start.date()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._clock() - self._origin)

    def epoch_seconds(self) -> int:
        return int(self.now().timestamp())
