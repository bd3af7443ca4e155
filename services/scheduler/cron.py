"""Cron slots of a schedule, as UTC instants, with an explicit daylight-saving policy.

A schedule is a 5-field cron expression (minute hour day-of-month month day-of-week,
or one of @hourly @daily @midnight @weekly @monthly @yearly @annually) read in an IANA
timezone. Slots are computed in local wall-clock time (croniter on naive datetimes,
where no DST exists) and each local time is then turned into one UTC instant with
zoneinfo:

* A local time that exists once is that instant: `0 9 * * 1-5` in America/New_York
  fires at 14:00 UTC in winter (EST) and 13:00 UTC in summer (EDT), 09:00 local all
  year.
* A local time that does not exist (spring forward, e.g. 02:30 on 2027-03-14 in New
  York, when clocks jump from 02:00 to 03:00) fires once, at the next valid instant:
  the moment of the transition (03:00 local, 07:00 UTC). Several slots inside the
  gap (`*/15 2 * * *`) and a slot at the first valid time (03:00) all land on that
  instant and fire once together.
* A local time that happens twice (fall back, e.g. 01:30 on 2026-11-01 in New York)
  fires once, at its first occurrence (01:30 EDT, 05:30 UTC); the repeated hour is
  not fired again.

A slot is identified by its UTC instant, so "once" holds across replicas: the claim
and the execution id of a slot are both derived from that instant.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

# The schedules.cron column's width.
MAX_CRON_LENGTH = 200
CRON_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


class ScheduleError(ValueError):
    """A schedule setting that cannot be used; the message says why, for a 422."""


def parse_cron(expression: str) -> str:
    """Validate a cron expression and return it with normalised spacing."""
    normalized = " ".join(expression.split())
    if len(normalized) > MAX_CRON_LENGTH:
        raise ScheduleError(f"cron expression is longer than {MAX_CRON_LENGTH} characters")
    if not normalized:
        raise ScheduleError("cron expression is empty; expected 5 fields like '0 9 * * 1-5'")
    if normalized.startswith("@"):
        if normalized.lower() not in CRON_ALIASES:
            raise ScheduleError(
                f"invalid cron expression {expression!r}: unknown alias; use one of {', '.join(sorted(CRON_ALIASES))}"
            )
        return normalized.lower()
    fields = normalized.split(" ")
    if len(fields) != 5:
        raise ScheduleError(
            f"invalid cron expression {expression!r}: expected 5 fields "
            f"(minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    try:
        iterator = croniter(normalized, datetime(2000, 1, 1))
    except (CroniterError, ValueError, KeyError) as exc:
        raise ScheduleError(f"invalid cron expression {expression!r}: {exc}") from None
    try:
        iterator.get_next(datetime)
    except CroniterError:
        raise ScheduleError(f"invalid cron expression {expression!r}: it never fires") from None
    return normalized


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown timezone {name!r}; use an IANA name like 'America/New_York'") from None


def local_to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """The one instant a naive local wall-clock time fires at (the module's DST policy)."""
    first = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == local:
        # exists; for an ambiguous time fold=0 is its first occurrence
        return first
    return _transition_after_gap(local, zone)


def _transition_after_gap(local: datetime, zone: ZoneInfo) -> datetime:
    # For a time inside a gap, fold=0 reads it with the offset before the transition
    # (an instant after it) and fold=1 with the offset after (an instant before it):
    # the transition lies between, and is found by bisection on whole seconds.
    late = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    early = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if early > late:
        early, late = late, early
    offset_after = late.astimezone(zone).utcoffset()
    lo, hi = 0, int((late - early).total_seconds())
    while lo < hi:
        mid = (lo + hi) // 2
        if (early + timedelta(seconds=mid)).astimezone(zone).utcoffset() == offset_after:
            hi = mid
        else:
            lo = mid + 1
    return early + timedelta(seconds=lo)


def slots_after(cron: str, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """UTC instants of the cron's slots strictly after `after`, in order, each once."""
    local_start = after.astimezone(zone).replace(tzinfo=None)
    iterator = croniter(cron, local_start)
    last: datetime | None = None
    while True:
        try:
            local = iterator.get_next(datetime)
        except CroniterError:
            return
        instant = local_to_utc(local, zone)
        if instant <= after or (last is not None and instant <= last):
            continue
        last = instant
        yield instant


def slots_between(cron: str, zone: ZoneInfo, after: datetime, until: datetime) -> Iterator[datetime]:
    """Slots in (after, until]."""
    for instant in slots_after(cron, zone, after):
        if instant > until:
            return
        yield instant
