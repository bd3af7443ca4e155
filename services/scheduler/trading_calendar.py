"""Exchange trading days, from `exchange_calendars` (XNYS = the New York Stock Exchange).

A schedule names a calendar (`XNYS` by default) or none. A slot fires only if its
date, read in the schedule's own timezone, is a trading session of that exchange;
otherwise it is skipped and recorded as a holiday (weekends included).

The library (and the pandas it imports) runs in a short-lived child process,
services/scheduler/calendar_worker.py, once per exchange and block of years; this
process keeps only the answers, plain dates and times.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache, lru_cache

from services.scheduler.cron import ScheduleError

DEFAULT_CALENDAR = "XNYS"
_OFF = {"", "none", "off", "null"}
# Calendars are asked for whole decades: one child process per exchange and decade.
_BLOCK_YEARS = 10
WORKER_TIMEOUT_SECONDS = 120


class CalendarUnavailable(RuntimeError):
    """The calendar child process failed: the library could not be run."""


@dataclass(frozen=True)
class CalendarBlock:
    weekmask: str  # Monday first, "1" for a weekday the exchange trades on
    closes: dict[date, datetime]  # session -> its close (UTC); empty when the library has no data


def _ask_worker(*args: str) -> object:
    result = subprocess.run(
        [sys.executable, "-m", "services.scheduler.calendar_worker", *args],
        capture_output=True, text=True, timeout=WORKER_TIMEOUT_SECONDS,
    )
    if result.returncode != 0:
        raise CalendarUnavailable(f"calendar worker {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


@cache
def _known_names() -> dict[str, str]:
    return {name.upper(): name for name in _ask_worker("names")}


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


@lru_cache(maxsize=32)
def _block(name: str, first_year: int) -> CalendarBlock:
    answer = _ask_worker("block", name, str(first_year), str(first_year + _BLOCK_YEARS - 1))
    return CalendarBlock(
        weekmask=answer["weekmask"],
        closes={date.fromisoformat(day): datetime.fromisoformat(close) for day, close in answer["sessions"]},
    )


def _block_of(name: str, day: date) -> CalendarBlock:
    return _block(name, day.year - day.year % _BLOCK_YEARS)


def is_trading_day(name: str, day: date) -> bool:
    block = _block_of(name, day)
    if not block.closes:
        # the library has no data that far out for this exchange: weekdays only
        return block.weekmask[day.weekday()] == "1"
    return day in block.closes


def sessions_between(name: str, start: date, end: date) -> list[date]:
    """The calendar's trading sessions from `start` to `end`, both included, in order."""
    sessions: list[date] = []
    block_year = start.year - start.year % _BLOCK_YEARS
    while block_year <= end.year:
        first, last = max(start, date(block_year, 1, 1)), min(end, date(block_year + _BLOCK_YEARS - 1, 12, 31))
        block = _block(name, block_year)
        days = (first + timedelta(days=n) for n in range((last - first).days + 1))
        if block.closes:
            sessions += [day for day in days if day in block.closes]
        else:
            # the library has no data that far out for this exchange: weekdays only
            sessions += [day for day in days if block.weekmask[day.weekday()] == "1"]
        block_year += _BLOCK_YEARS
    return sessions


def session_close(name: str, session: date) -> datetime | None:
    """When the session closes (UTC); None when the library cannot tell."""
    return _block_of(name, session).closes.get(session)


def non_trading_reason(name: str, day: date) -> str:
    kind = "weekend" if _block_of(name, day).weekmask[day.weekday()] == "0" else "holiday"
    return f"{day.isoformat()} is not a {name} trading day ({kind})"
