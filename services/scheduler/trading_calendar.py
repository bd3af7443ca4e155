"""Exchange trading days, from `exchange_calendars` (XNYS = the New York Stock Exchange).

A schedule names a calendar (`XNYS` by default) or none. A slot fires only if its
date, read in the schedule's own timezone, is a trading session of that exchange;
otherwise it is skipped and recorded as a holiday (weekends included).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache

import exchange_calendars
from pandas.errors import Pandas4Warning

from services.scheduler.cron import ScheduleError

DEFAULT_CALENDAR = "XNYS"
_OFF = {"", "none", "off", "null"}
# Calendars are built for whole decades: building one takes a few hundred ms.
_BLOCK_YEARS = 10


@cache
def _known_names() -> dict[str, str]:
    return {name.upper(): name for name in exchange_calendars.get_calendar_names()}


def parse_calendar(name: str | None) -> str | None:
    """A calendar name as stored (`None` = no calendar), or ScheduleError."""
    if name is None or name.strip().lower() in _OFF:
        return None
    known = _known_names().get(name.strip().upper())
    if known is None:
        raise ScheduleError(
            f"unknown trading calendar {name!r}; use an exchange_calendars code such as "
            f"'XNYS' (NYSE), 'XNAS', 'XLON', or null to fire on every day"
        )
    return known


@contextmanager
def _without_pandas_deprecations() -> Iterator[None]:
    # exchange_calendars 4.13 trips pandas 3.1 deprecations inside; nothing to act on here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Pandas4Warning)
        yield


@lru_cache(maxsize=32)
def _calendar_for_block(name: str, first_year: int):
    # Starts a month early: a calendar's first session is its start's next trading day,
    # and a date before it (2 January after the New Year holiday) would be out of bounds.
    return exchange_calendars.get_calendar(
        name, start=f"{first_year - 1}-12-01", end=f"{first_year + _BLOCK_YEARS - 1}-12-31"
    )


@cache
def _weekmask(name: str) -> str:
    with _without_pandas_deprecations():
        return exchange_calendars.get_calendar(name).weekmask


def is_trading_day(name: str, day: date) -> bool:
    with _without_pandas_deprecations():
        try:
            calendar = _calendar_for_block(name, day.year - day.year % _BLOCK_YEARS)
            return bool(calendar.is_session(day.isoformat()))
        except (exchange_calendars.errors.CalendarError, ValueError):
            # the library has no data that far out for this exchange: weekdays only
            return _weekmask(name)[day.weekday()] == "1"


def sessions_between(name: str, start: date, end: date) -> list[date]:
    """The calendar's trading sessions from `start` to `end`, both included, in order."""
    sessions: list[date] = []
    block = start.year - start.year % _BLOCK_YEARS
    while block <= end.year:
        first, last = max(start, date(block, 1, 1)), min(end, date(block + _BLOCK_YEARS - 1, 12, 31))
        with _without_pandas_deprecations():
            try:
                found = _calendar_for_block(name, block).sessions_in_range(first.isoformat(), last.isoformat())
                sessions += [session.date() for session in found]
            except (exchange_calendars.errors.CalendarError, ValueError):
                # the library has no data that far out for this exchange: weekdays only
                days = (first + timedelta(days=n) for n in range((last - first).days + 1))
                sessions += [day for day in days if _weekmask(name)[day.weekday()] == "1"]
        block += _BLOCK_YEARS
    return sessions


def session_close(name: str, session: date) -> datetime | None:
    """When the session closes (UTC); None when the library cannot tell."""
    with _without_pandas_deprecations():
        try:
            calendar = _calendar_for_block(name, session.year - session.year % _BLOCK_YEARS)
            return calendar.session_close(session.isoformat()).to_pydatetime().astimezone(UTC)
        except (exchange_calendars.errors.CalendarError, ValueError):
            return None


def non_trading_reason(name: str, day: date) -> str:
    kind = "weekend" if _weekmask(name)[day.weekday()] == "0" else "holiday"
    return f"{day.isoformat()} is not a {name} trading day ({kind})"
