"""IBKR's scheduled outages, when a lost connection is expected rather than alarming.

Times are New York's (docs/ibkr-notes.md): the daily server reset 00:15-01:45 ET, and the weekend
maintenance from Friday 23:00 to Saturday 03:00 ET. Outside these windows an outage is a
warning; inside one it is logged quietly, and becomes an alert only when it lasts longer
than the window plus a grace period.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
FRIDAY, SATURDAY = 4, 5


@dataclass(frozen=True)
class WeeklyWindow:
    """From `start` on `start_weekday` to `end` on `end_weekday` (Monday = 0), New York
    time. A daily window is one entry per weekday."""

    name: str
    start_weekday: int
    start: datetime.time
    end_weekday: int
    end: datetime.time


@dataclass(frozen=True)
class Outage:
    """A window occurrence: aware datetimes in UTC."""

    name: str
    start: datetime.datetime
    end: datetime.datetime

    def as_detail(self) -> dict[str, str]:
        return {"window": self.name, "start": self.start.isoformat(), "end": self.end.isoformat()}


def _daily(name: str, start: datetime.time, end: datetime.time) -> tuple[WeeklyWindow, ...]:
    return tuple(WeeklyWindow(name, day, start, day, end) for day in range(7))


IBKR_WINDOWS: tuple[WeeklyWindow, ...] = (
    *_daily("IBKR daily server reset", datetime.time(0, 15), datetime.time(1, 45)),
    WeeklyWindow("IBKR weekend maintenance", FRIDAY, datetime.time(23, 0), SATURDAY, datetime.time(3, 0)),
)


class MaintenanceCalendar:
    def __init__(self, windows: tuple[WeeklyWindow, ...] = IBKR_WINDOWS) -> None:
        self._windows = windows

    def outage_at(self, moment: datetime.datetime) -> Outage | None:
        """The scheduled window `moment` falls in (the one ending last if several)."""
        local = moment.astimezone(NEW_YORK)
        found: list[Outage] = []
        for window in self._windows:
            # The occurrence starting this week, and the one that started last week.
            for weeks_back in (0, 1):
                monday = local.date() - datetime.timedelta(days=local.weekday() + 7 * weeks_back)
                start_day = monday + datetime.timedelta(days=window.start_weekday)
                end_day = monday + datetime.timedelta(
                    days=window.end_weekday + (7 if window.end_weekday < window.start_weekday else 0)
                )
                start = datetime.datetime.combine(start_day, window.start, NEW_YORK)
                end = datetime.datetime.combine(end_day, window.end, NEW_YORK)
                if start <= local < end:
                    found.append(Outage(window.name, start.astimezone(datetime.UTC), end.astimezone(datetime.UTC)))
        return max(found, key=lambda o: o.end) if found else None
