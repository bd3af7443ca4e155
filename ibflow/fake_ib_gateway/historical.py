"""Historical-bar requests: parsing IBKR's end date/duration strings and picking the daily bars.

Semantics the fake applies (daily bars only):
- an empty `endDateTime` means the replay's "today", the last date in the data;
- `yyyymmdd hh:mm:ss [zone]` / `yyyymmdd-hh:mm:ss` (UTC) name an instant, without a zone in
  the gateway's zone (US/Eastern); bars dated on or before that instant's New York date count;
- `N D` is the last N trading days (N bars), `N W`/`N M`/`N Y` are calendar weeks/months/years
  back from the end date (start exclusive), `N S` seconds rounded up to whole days.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .clock import EXCHANGE_ZONE
from .framing import Field
from .protocol import Outgoing
from .sample_data import DailyBar

DAILY_BAR_SIZE = "1 day"
SERVED_WHAT_TO_SHOW = frozenset({"TRADES", "ADJUSTED_LAST"})
IB_BAR_SIZES = frozenset({
    "1 secs", "5 secs", "10 secs", "15 secs", "30 secs", "1 min", "2 mins", "3 mins", "5 mins",
    "10 mins", "15 mins", "20 mins", "30 mins", "1 hour", "2 hours", "3 hours", "4 hours",
    "8 hours", "1 day", "1 week", "1 month",
})
# IBKR sends -1 where a bar has no WAP or trade count; the sample data has neither.
UNAVAILABLE = -1

_END = re.compile(r"(\d{8})[ -](\d{2}):(\d{2}):(\d{2})(?: (\S+))?")
_DURATION = re.compile(r"([1-9]\d*) ([SDWMY])")


class InvalidRequest(ValueError):
    """The request's strings are malformed (IBKR answers error 321)."""


@dataclass(frozen=True)
class Duration:
    amount: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _DURATION.fullmatch(text.strip())
        if not match:
            raise InvalidRequest(f"Historical data query duration [{text}] is invalid")
        return cls(int(match.group(1)), match.group(2))

    def select(self, bars: Sequence[DailyBar], end: date) -> list[DailyBar]:
        ending = [b for b in bars if b.day <= end]
        if self.unit == "D":
            return ending[-self.amount:]
        start = self._exclusive_start(end)
        return [b for b in ending if b.day > start]

    def _exclusive_start(self, end: date) -> date:
        match self.unit:
            case "S":
                return end - timedelta(days=math.ceil(self.amount / 86_400))
            case "W":
                return end - timedelta(weeks=self.amount)
            case "M":
                return _months_before(end, self.amount)
            case _:
                return _months_before(end, 12 * self.amount)


def _months_before(day: date, months: int) -> date:
    year, month_index = divmod(day.year * 12 + day.month - 1 - months, 12)
    month = month_index + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def parse_end_date(text: str, replay_today: date) -> date:
    """The exchange date an `endDateTime` string falls on."""
    text = text.strip()
    if not text:
        return replay_today
    match = _END.fullmatch(text)
    if not match:
        raise InvalidRequest(
            f"Historical data query end date/time string [{text}] is invalid. "
            "Format is 'YYYYMMDD{SPACE}hh:mm:ss[{SPACE}TMZ]'."
        )
    day, hour, minute, second, zone_name = match.groups()
    try:
        naive = datetime.strptime(f"{day}{hour}{minute}{second}", "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise InvalidRequest(f"Historical data query end date/time string [{text}] is invalid") from exc
    if zone_name:
        zone = _zone(zone_name, text)
    elif "-" in text:
        zone = timezone.utc
    else:
        zone = EXCHANGE_ZONE
    return naive.replace(tzinfo=zone).astimezone(EXCHANGE_ZONE).date()


def _zone(name: str, text: str) -> ZoneInfo | timezone:
    if name.upper() in ("UTC", "GMT"):
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidRequest(f"Historical data query end date/time string [{text}] has an unknown time zone") from exc


def historical_data_message(
    req_id: int, bars: Sequence[DailyBar], start: date, end: date, what_to_show: str
) -> list[Field]:
    """`historicalData` (msg 17) with daily dates as `yyyymmdd`."""
    message: list[Field] = [Outgoing.HISTORICAL_DATA, req_id, f"{start:%Y%m%d}", f"{end:%Y%m%d}", len(bars)]
    for bar in bars:
        if what_to_show == "ADJUSTED_LAST":
            factor = bar.adj_close / bar.close
            prices = (bar.open * factor, bar.high * factor, bar.low * factor, bar.adj_close)
        else:
            prices = (bar.open, bar.high, bar.low, bar.close)
        message += [f"{bar.day:%Y%m%d}", *prices, bar.volume, UNAVAILABLE, UNAVAILABLE]
    return message
