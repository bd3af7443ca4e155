"""What `exchange_calendars` says about one exchange, computed in a child process.

The library imports pandas (about 75 MB that would stay in the scheduler for good,
half of its memory), while the scheduler needs only a few facts per exchange: its
calendar names, and per block of years its sessions with their closes and its weekday
mask. services/scheduler/trading_calendar.py runs this module as
`python -m services.scheduler.calendar_worker ...`, reads the JSON it prints, and
keeps the answer; the child and its pandas are gone afterwards.

    python -m services.scheduler.calendar_worker names
    python -m services.scheduler.calendar_worker block XNYS 2020 2029
"""

from __future__ import annotations

import json
import sys
import warnings
from datetime import UTC
from typing import Any


def calendar_names() -> list[str]:
    import exchange_calendars

    return sorted(exchange_calendars.get_calendar_names())


def calendar_block(name: str, first_year: int, last_year: int) -> dict[str, Any]:
    """{"weekmask", "sessions": [[date, close UTC]]}: the sessions of the years
    `first_year`..`last_year`, none when the library has no data that far out."""
    import exchange_calendars
    from pandas.errors import Pandas4Warning

    with warnings.catch_warnings():
        # exchange_calendars 4.13 trips pandas 3.1 deprecations inside; nothing to act on here
        warnings.simplefilter("ignore", Pandas4Warning)
        weekmask = exchange_calendars.get_calendar(name).weekmask
        try:
            # Starts a month early: a calendar's first session is its start's next trading
            # day, and a date before it (2 January after the New Year holiday) would be out
            # of bounds.
            calendar = exchange_calendars.get_calendar(name, start=f"{first_year - 1}-12-01", end=f"{last_year}-12-31")
            closes = calendar.closes[calendar.sessions.year >= first_year]
        except (exchange_calendars.errors.CalendarError, ValueError):
            return {"weekmask": weekmask, "sessions": []}
    return {
        "weekmask": weekmask,
        "sessions": [
            [session.date().isoformat(), close.to_pydatetime().astimezone(UTC).isoformat()]
            for session, close in closes.items()
        ],
    }


def main(argv: list[str]) -> None:
    match argv:
        case ["names"]:
            answer: Any = calendar_names()
        case ["block", name, first_year, last_year]:
            answer = calendar_block(name, int(first_year), int(last_year))
        case _:
            raise SystemExit(__doc__)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
