"""Cron slots, trading days and the DST policy, with a controllable "now"."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.scheduler.cron import ScheduleError, local_to_utc, parse_cron, parse_timezone, slots_between
from services.scheduler.execution_ids import manual_execution_id, request_event_id, scheduled_execution_id
from services.scheduler.slot_decisions import MisfirePolicy, SchedulePolicy, next_fire_times
from services.scheduler.trading_calendar import is_trading_day, non_trading_reason, parse_calendar

pytestmark = pytest.mark.unit

NEW_YORK = parse_timezone("America/New_York")
LONDON = parse_timezone("Europe/London")
SYDNEY = parse_timezone("Australia/Sydney")


def policy(cron: str, zone=NEW_YORK, calendar: str | None = "XNYS", paused: bool = False) -> SchedulePolicy:
    return SchedulePolicy(
        cron=parse_cron(cron), zone=zone, paused=paused, misfire_policy=MisfirePolicy.LAST,
        misfire_window=timedelta(hours=1), max_active_runs=1, calendar=calendar,
    )


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def slots_on(cron: str, zone, day: date) -> list[datetime]:
    """The slots whose local date is `day` (searching a UTC window wide enough for any zone)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=1)
    return [
        s for s in slots_between(cron, zone, start, start + timedelta(days=3)) if s.astimezone(zone).date() == day
    ]


# --- acceptance ---------------------------------------------------------------------


def test_next_20_weekday_9am_fire_times_from_2026_12_18_skip_christmas_and_new_year():
    times = next_fire_times(policy("0 9 * * 1-5"), after=utc(2026, 12, 18), count=20)

    assert len(times) == 20
    local_days = [t.astimezone(NEW_YORK).date() for t in times]
    assert date(2026, 12, 25) not in local_days
    assert date(2027, 1, 1) not in local_days
    assert local_days[0] == date(2026, 12, 18)
    # 2027-01-18 is Martin Luther King Jr. Day, a NYSE holiday too
    assert local_days[-1] == date(2027, 1, 19)
    assert all(t.astimezone(NEW_YORK).hour == 9 and t.astimezone(NEW_YORK).minute == 0 for t in times)
    assert all(t.weekday() < 5 for t in local_days)
    assert all((t.hour, t.minute) == (14, 0) for t in times)  # EST all along


def test_without_a_calendar_holidays_fire():
    times = next_fire_times(policy("0 9 * * 1-5", calendar=None), after=utc(2026, 12, 24), count=2)
    assert [t.astimezone(NEW_YORK).date() for t in times] == [date(2026, 12, 24), date(2026, 12, 25)]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((2027, 3, 12), (2027, 3, 15)),  # 2027-03-14: clocks go forward
        ((2026, 3, 6), (2026, 3, 9)),  # 2026-03-08
    ],
)
def test_fire_times_on_both_sides_of_spring_forward_are_9am_local(before, after):
    times = next_fire_times(policy("0 9 * * 1-5"), after=utc(*before), count=2)

    assert [t.astimezone(NEW_YORK).date() for t in times] == [date(*before), date(*after)]
    assert [t.astimezone(NEW_YORK).hour for t in times] == [9, 9]
    assert times == [utc(*before, 14, 0), utc(*after, 13, 0)]


@pytest.mark.parametrize(("before", "after"), [((2026, 10, 30), (2026, 11, 2)), ((2027, 11, 5), (2027, 11, 8))])
def test_fire_times_on_both_sides_of_fall_back_are_9am_local(before, after):
    times = next_fire_times(policy("0 9 * * 1-5"), after=utc(*before), count=2)
    assert times == [utc(*before, 13, 0), utc(*after, 14, 0)]


# --- the DST policy -----------------------------------------------------------------


@pytest.mark.parametrize("day", [date(2026, 11, 1), date(2027, 11, 7)])
def test_the_fall_back_day_fires_once_for_a_daily_schedule(day):
    assert slots_on("0 9 * * *", NEW_YORK, day) == [utc(day.year, day.month, day.day, 14, 0)]


@pytest.mark.parametrize("day", [date(2026, 11, 1), date(2027, 11, 7)])
def test_a_local_time_that_happens_twice_fires_once_at_its_first_occurrence(day):
    # 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST)
    assert slots_on("30 1 * * *", NEW_YORK, day) == [utc(day.year, day.month, day.day, 5, 30)]


@pytest.mark.parametrize("day", [date(2026, 11, 1), date(2027, 11, 7)])
def test_the_repeated_hour_is_not_fired_again_by_an_hourly_schedule(day):
    fired = slots_on("0 * * * *", NEW_YORK, day)
    local_hours = [t.astimezone(NEW_YORK).hour for t in fired]
    assert local_hours == list(range(24))  # 01:00 once, though the day has 25 hours
    assert len(set(fired)) == len(fired)


@pytest.mark.parametrize("day", [date(2026, 3, 8), date(2027, 3, 14)])
def test_a_local_time_that_does_not_exist_fires_once_at_the_next_valid_instant(day):
    # 02:30 does not exist: 02:00 EST is followed by 03:00 EDT (07:00 UTC)
    fired = slots_on("30 2 * * *", NEW_YORK, day)
    assert fired == [utc(day.year, day.month, day.day, 7, 0)]
    assert fired[0].astimezone(NEW_YORK).strftime("%H:%M %Z") == "03:00 EDT"


@pytest.mark.parametrize("day", [date(2026, 3, 8), date(2027, 3, 14)])
def test_slots_inside_the_gap_and_at_its_end_fire_together_once(day):
    fired = slots_on("*/15 2-3 * * *", NEW_YORK, day)
    assert [t.astimezone(NEW_YORK).strftime("%H:%M") for t in fired] == ["03:00", "03:15", "03:30", "03:45"]


@pytest.mark.parametrize("day", [date(2026, 3, 8), date(2027, 3, 14)])
def test_the_spring_forward_day_fires_once_for_a_daily_schedule(day):
    assert slots_on("0 9 * * *", NEW_YORK, day) == [utc(day.year, day.month, day.day, 13, 0)]


@pytest.mark.parametrize(
    ("zone", "spring", "spring_expected", "fall", "fall_expected"),
    [
        # London: 01:00 GMT -> 02:00 BST (last Sunday of March); 02:00 BST -> 01:00 GMT (October)
        (LONDON, date(2026, 3, 29), (1, 0), date(2026, 10, 25), (0, 30)),
        (LONDON, date(2027, 3, 28), (1, 0), date(2027, 10, 31), (0, 30)),
    ],
)
def test_another_zone_follows_the_same_policy(zone, spring, spring_expected, fall, fall_expected):
    # 01:30 does not exist on the spring day: fires at the transition, 02:00 BST = 01:00 UTC
    assert slots_on("30 1 * * *", zone, spring) == [utc(spring.year, spring.month, spring.day, *spring_expected)]
    # 01:30 happens twice on the fall day: fires once, at 01:30 BST = 00:30 UTC
    assert slots_on("30 1 * * *", zone, fall) == [utc(fall.year, fall.month, fall.day, *fall_expected)]
    # and 09:00 stays 09:00 local on both sides
    assert [t.astimezone(zone).hour for t in slots_on("0 9 * * *", zone, spring)] == [9]
    assert [t.astimezone(zone).hour for t in slots_on("0 9 * * *", zone, fall)] == [9]


def test_a_southern_hemisphere_zone_follows_the_same_policy():
    # Sydney 2026-10-04: 02:00 AEST -> 03:00 AEDT; 2027-04-04: 03:00 AEDT -> 02:00 AEST
    assert [t.astimezone(SYDNEY).strftime("%H:%M") for t in slots_on("30 2 * * *", SYDNEY, date(2026, 10, 4))] == [
        "03:00"
    ]
    assert slots_on("30 2 * * *", SYDNEY, date(2027, 4, 4)) == [utc(2027, 4, 3, 15, 30)]  # 02:30 AEDT


def test_local_to_utc_of_ordinary_times():
    assert local_to_utc(datetime(2026, 7, 1, 9, 0), NEW_YORK) == utc(2026, 7, 1, 13, 0)
    assert local_to_utc(datetime(2026, 1, 2, 9, 0), NEW_YORK) == utc(2026, 1, 2, 14, 0)
    assert local_to_utc(datetime(2026, 1, 2, 9, 0), parse_timezone("UTC")) == utc(2026, 1, 2, 9, 0)


def test_slots_between_is_open_at_the_start_and_closed_at_the_end():
    slots = list(slots_between("0 * * * *", parse_timezone("UTC"), utc(2026, 1, 1, 1), utc(2026, 1, 1, 3)))
    assert slots == [utc(2026, 1, 1, 2), utc(2026, 1, 1, 3)]


# --- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "out of range"),
        ("0 9 * *", "expected 5 fields"),
        ("0 9 * * 1-5 2027", "expected 5 fields"),
        ("", "empty"),
        ("@reboot", "unknown alias"),
        ("0 9 30 2 *", "never fires"),
        ("a b c d e", "invalid cron expression"),
    ],
)
def test_invalid_cron_expressions_are_refused_with_a_reason(expression, message):
    with pytest.raises(ScheduleError, match=message):
        parse_cron(expression)


def test_valid_cron_expressions_are_normalised():
    assert parse_cron("  0   9 * *   mon-fri ") == "0 9 * * mon-fri"
    assert parse_cron("@Daily") == "@daily"


def test_unknown_timezone_is_refused():
    with pytest.raises(ScheduleError, match="unknown timezone 'Mars/Olympus'"):
        parse_timezone("Mars/Olympus")


def test_calendars():
    assert parse_calendar("xnys") == "XNYS"
    assert parse_calendar(None) is None
    assert parse_calendar("none") is None
    with pytest.raises(ScheduleError, match="unknown trading calendar 'NOPE'"):
        parse_calendar("NOPE")
    assert not is_trading_day("XNYS", date(2026, 12, 25))
    assert is_trading_day("XNYS", date(2026, 12, 24))
    assert "holiday" in non_trading_reason("XNYS", date(2026, 12, 25))
    assert "weekend" in non_trading_reason("XNYS", date(2026, 12, 26))
    # London is closed on Boxing Day (observed on Monday 2026-12-28), New York is not
    assert not is_trading_day("XLON", date(2026, 12, 28))
    assert is_trading_day("XNYS", date(2026, 12, 28))


def test_a_schedule_that_only_matches_holidays_has_no_fire_times_instead_of_searching_forever():
    assert next_fire_times(policy("0 9 25 12 *"), after=utc(2026, 1, 1), count=3) == []


def test_a_paused_schedule_has_no_fire_times():
    assert next_fire_times(policy("0 9 * * 1-5", paused=True), after=utc(2026, 12, 18), count=5) == []


# --- ids ----------------------------------------------------------------------------


def test_a_slot_execution_id_is_readable_and_deterministic():
    slot = datetime(2026, 12, 18, 9, 0, tzinfo=NEW_YORK)
    execution_id = scheduled_execution_id("ibkr_trading_signal_workflow", slot)
    assert execution_id == "scheduled-ibkr_trading_signal_workflow-20261218T140000Z"
    assert execution_id == scheduled_execution_id("ibkr_trading_signal_workflow", utc(2026, 12, 18, 14))
    assert request_event_id(execution_id) == request_event_id(execution_id)


def test_manual_execution_ids_are_unique():
    ids = {manual_execution_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("manual-") and len(i) == len("manual-") + 32 for i in ids)
