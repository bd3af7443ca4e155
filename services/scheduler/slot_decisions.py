"""What happens to a schedule's slots: fire, or skip and why. Pure functions, no I/O.

Order of the checks for each due slot: paused → trading calendar → lateness.

Lateness: a slot decided more than the misfire grace (`SCHEDULER_MISFIRE_GRACE_SECONDS`)
after its time was missed, because no scheduler replica was running. The schedule's
`misfire_policy` decides:
* `all`: every missed slot at most `misfire_window_seconds` late is fired (`recovered`);
* `last`: only the most recent slot of the batch is fired; earlier missed ones are
  skipped as superseded; a missed slot more than the window late is skipped too;
* `none`: missed slots are skipped.
`max_active_runs` (applied where runs are counted, see `scheduling_loop`) follows the same
policy: a slot that would exceed it waits in a queue under `all` (every queued slot
fires in turn) and `last` (only the newest queued slot is kept), is skipped under
`none`, and a queued slot that has waited longer than the window is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from services.scheduler import cron, trading_calendar


class MisfirePolicy(StrEnum):
    ALL = "all"
    LAST = "last"
    NONE = "none"


class Outcome(StrEnum):
    FIRED = "fired"
    RECOVERED = "recovered"
    MANUAL = "manual"
    BACKFILL = "backfill"
    SKIPPED = "skipped"
    QUEUED = "queued"
    DEDUPLICATED = "deduplicated"
    PUBLISH_FAILED = "publish_failed"


FIRING_OUTCOMES = frozenset({Outcome.FIRED, Outcome.RECOVERED, Outcome.MANUAL})


class SkipReason(StrEnum):
    HOLIDAY = "holiday"
    PAUSED = "paused"
    MISFIRE = "misfire_policy"
    CONCURRENCY = "max_active_runs"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class SchedulePolicy:
    cron: str
    zone: ZoneInfo
    paused: bool
    misfire_policy: MisfirePolicy
    misfire_window: timedelta
    max_active_runs: int | None
    calendar: str | None


@dataclass(frozen=True)
class SlotDecision:
    slot_at: datetime
    outcome: Outcome
    reason: SkipReason | None
    detail: str

    @property
    def fires(self) -> bool:
        return self.outcome in FIRING_OUTCOMES


def describe_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def is_trading_slot(policy: SchedulePolicy, slot_at: datetime) -> bool:
    if policy.calendar is None:
        return True
    return trading_calendar.is_trading_day(policy.calendar, slot_at.astimezone(policy.zone).date())


def decide_slots(
    policy: SchedulePolicy, slots: Iterable[datetime], *, now: datetime, grace: timedelta
) -> list[SlotDecision]:
    decisions = [_decide_one(policy, slot_at, now=now, grace=grace) for slot_at in slots]
    if policy.misfire_policy is MisfirePolicy.LAST:
        decisions = _keep_only_latest_recovery(decisions)
    return decisions


def _decide_one(policy: SchedulePolicy, slot_at: datetime, *, now: datetime, grace: timedelta) -> SlotDecision:
    if policy.paused:
        return SlotDecision(slot_at, Outcome.SKIPPED, SkipReason.PAUSED, "the schedule was paused")
    if not is_trading_slot(policy, slot_at):
        assert policy.calendar is not None
        day = slot_at.astimezone(policy.zone).date()
        return SlotDecision(
            slot_at, Outcome.SKIPPED, SkipReason.HOLIDAY, trading_calendar.non_trading_reason(policy.calendar, day)
        )
    lateness = now - slot_at
    if lateness <= grace:
        return SlotDecision(slot_at, Outcome.FIRED, None, "fired on time")
    late = describe_duration(lateness)
    if policy.misfire_policy is MisfirePolicy.NONE:
        return SlotDecision(
            slot_at, Outcome.SKIPPED, SkipReason.MISFIRE,
            f"missed by {late} while no scheduler was running; misfire policy 'none' skips missed slots",
        )
    if lateness > policy.misfire_window:
        return SlotDecision(
            slot_at, Outcome.SKIPPED, SkipReason.MISFIRE,
            f"missed by {late} while no scheduler was running, more than the misfire window "
            f"({describe_duration(policy.misfire_window)})",
        )
    return SlotDecision(
        slot_at, Outcome.RECOVERED, None,
        f"missed while no scheduler was running; fired {late} late (misfire policy '{policy.misfire_policy}')",
    )


def _keep_only_latest_recovery(decisions: list[SlotDecision]) -> list[SlotDecision]:
    firing = [d for d in decisions if d.fires]
    if not firing:
        return decisions
    latest = firing[-1].slot_at
    return [
        SlotDecision(
            d.slot_at, Outcome.SKIPPED, SkipReason.MISFIRE,
            f"missed while no scheduler was running; superseded by the later slot {latest.isoformat()} "
            "(misfire policy 'last')",
        )
        if d.outcome is Outcome.RECOVERED and d.slot_at != latest
        else d
        for d in decisions
    ]


# A fire-time search gives up after this many candidate slots or this far ahead: a cron
# that only matches exchange holidays (`0 9 25 12 *` on XNYS) would search forever.
MAX_FIRE_TIME_CANDIDATES = 20_000
FIRE_TIME_HORIZON = timedelta(days=5 * 366)


def next_fire_times(policy: SchedulePolicy, *, after: datetime, count: int) -> list[datetime]:
    """The next `count` instants the schedule fires at (none while paused), within five years."""
    if policy.paused or count <= 0:
        return []
    found: list[datetime] = []
    horizon = after + FIRE_TIME_HORIZON
    for examined, slot_at in enumerate(cron.slots_after(policy.cron, policy.zone, after)):
        if examined >= MAX_FIRE_TIME_CANDIDATES or slot_at > horizon:
            break
        if is_trading_slot(policy, slot_at):
            found.append(slot_at)
            if len(found) == count:
                break
    return found
