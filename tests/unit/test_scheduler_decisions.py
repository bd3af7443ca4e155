"""What happens to due slots: paused, holidays, lateness and the misfire policies."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.scheduler.api_schemas import ScheduleUpdate
from services.scheduler.cron import ScheduleError, parse_timezone
from services.scheduler.schedules import validated_changes
from services.scheduler.slot_decisions import (
    next_fire_times,
    MisfirePolicy,
    Outcome,
    SchedulePolicy,
    SkipReason,
    decide_slots,
    describe_duration,
)

pytestmark = pytest.mark.unit

UTC_ZONE = parse_timezone("UTC")
GRACE = timedelta(seconds=60)


def policy(misfire: MisfirePolicy = MisfirePolicy.ALL, *, paused=False, calendar=None, window_hours=3) -> SchedulePolicy:
    return SchedulePolicy(
        cron="0 * * * *", zone=UTC_ZONE, paused=paused, misfire_policy=misfire,
        misfire_window=timedelta(hours=window_hours), max_active_runs=None, calendar=calendar,
    )


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2027, 1, day, hour, minute, tzinfo=UTC)


# 2027-01-04 is a Monday; after downtime from 00:00 to 05:10 the 01:00..05:00 slots are due.
MISSED = [at(4, h) for h in range(1, 6)]
NOW = at(4, 5, 10)


def outcomes(decisions):
    return [(d.slot_at.hour, d.outcome, d.reason) for d in decisions]


def test_a_slot_within_the_grace_fires_on_time():
    [decision] = decide_slots(policy(), [at(4, 5)], now=at(4, 5, 0) + timedelta(seconds=3), grace=GRACE)
    assert (decision.outcome, decision.reason) == (Outcome.FIRED, None)
    assert decision.fires


def test_misfire_all_fires_every_missed_slot_within_the_window():
    decisions = decide_slots(policy(MisfirePolicy.ALL), MISSED, now=NOW, grace=GRACE)
    assert outcomes(decisions) == [
        (1, Outcome.SKIPPED, SkipReason.MISFIRE),  # 4h10m late, window 3h
        (2, Outcome.SKIPPED, SkipReason.MISFIRE),  # 3h10m late
        (3, Outcome.RECOVERED, None),
        (4, Outcome.RECOVERED, None),
        (5, Outcome.RECOVERED, None),
    ]
    assert "more than the misfire window (3h00m)" in decisions[0].detail
    assert "fired 2h10m late" in decisions[2].detail


def test_misfire_last_fires_only_the_most_recent_missed_slot():
    decisions = decide_slots(policy(MisfirePolicy.LAST), MISSED, now=NOW, grace=GRACE)
    assert outcomes(decisions) == [
        (1, Outcome.SKIPPED, SkipReason.MISFIRE),
        (2, Outcome.SKIPPED, SkipReason.MISFIRE),
        (3, Outcome.SKIPPED, SkipReason.MISFIRE),
        (4, Outcome.SKIPPED, SkipReason.MISFIRE),
        (5, Outcome.RECOVERED, None),
    ]
    assert "superseded by the later slot 2027-01-04T05:00:00+00:00" in decisions[3].detail


def test_misfire_last_skips_missed_slots_when_an_on_time_slot_follows():
    decisions = decide_slots(policy(MisfirePolicy.LAST), [at(4, 4), at(4, 5)], now=at(4, 5, 0), grace=GRACE)
    assert outcomes(decisions) == [(4, Outcome.SKIPPED, SkipReason.MISFIRE), (5, Outcome.FIRED, None)]


def test_misfire_none_skips_every_missed_slot():
    decisions = decide_slots(policy(MisfirePolicy.NONE), MISSED, now=NOW, grace=GRACE)
    assert {(d.outcome, d.reason) for d in decisions} == {(Outcome.SKIPPED, SkipReason.MISFIRE)}
    assert "misfire policy 'none'" in decisions[-1].detail


def test_paused_comes_first():
    decisions = decide_slots(policy(paused=True, calendar="XNYS"), [at(1, 14), at(4, 14)], now=at(4, 14), grace=GRACE)
    assert {(d.outcome, d.reason) for d in decisions} == {(Outcome.SKIPPED, SkipReason.PAUSED)}


def test_exchange_holidays_and_weekends_are_skipped_as_holidays():
    slots = [at(1, 14), at(2, 14), at(4, 14)]  # New Year's Day, a Saturday, a Monday
    decisions = decide_slots(policy(calendar="XNYS"), slots, now=at(4, 14), grace=GRACE)
    assert outcomes(decisions) == [
        (14, Outcome.SKIPPED, SkipReason.HOLIDAY),
        (14, Outcome.SKIPPED, SkipReason.HOLIDAY),
        (14, Outcome.FIRED, None),
    ]
    assert decisions[0].detail == "2027-01-01 is not a XNYS trading day (holiday)"
    assert decisions[1].detail == "2027-01-02 is not a XNYS trading day (weekend)"


def test_the_trading_day_is_the_slot_date_in_the_schedule_timezone():
    tokyo = SchedulePolicy(
        cron="0 9 * * *", zone=parse_timezone("Asia/Tokyo"), paused=False, misfire_policy=MisfirePolicy.ALL,
        misfire_window=timedelta(hours=1), max_active_runs=None, calendar="XNYS",
    )
    # 09:00 Monday 2027-01-04 in Tokyo is still Sunday in New York; it is Monday that counts
    [decision] = decide_slots(tokyo, [at(4, 0)], now=at(4, 0), grace=GRACE)
    assert decision.outcome is Outcome.FIRED


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "5s"), (119, "119s"), (600, "10m00s"), (7260, "2h01m"), (3 * 86400 + 3600, "3d01h")]
)
def test_describe_duration(seconds, text):
    assert describe_duration(timedelta(seconds=seconds)) == text


# --- schedule updates ---------------------------------------------------------------


def test_a_partial_update_carries_only_what_was_sent():
    update = ScheduleUpdate.model_validate({"cron": "0 10 * * 1-5", "max_active_runs": None, "calendar": None})
    assert update.changes() == {"cron": "0 10 * * 1-5", "max_active_runs": None, "calendar": None}
    assert validated_changes(update.changes()) == {"cron": "0 10 * * 1-5", "max_active_runs": None, "calendar": None}


@pytest.mark.parametrize("field", ["cron", "timezone", "paused", "misfire_policy", "misfire_window_seconds"])
def test_null_is_refused_where_it_means_nothing_and_the_schema_says_so(field):
    with pytest.raises(ValidationError, match=field):
        ScheduleUpdate.model_validate({field: None})
    schema = ScheduleUpdate.model_json_schema()["properties"][field]
    assert "anyOf" not in schema and "default" not in schema


@pytest.mark.parametrize(
    "body",
    [{"max_active_runs": 1e10}, {"max_active_runs": 1001}, {"misfire_window_seconds": "5"},
     {"paused": "true"}, {"cron": "* " * 5000}, {"cron": "0 9 * * *\x00"}, {"timezone": "UTC\x00"}],
)
def test_values_the_database_cannot_take_are_refused_by_the_model(body):
    with pytest.raises(ValidationError):
        ScheduleUpdate.model_validate(body)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cron": "0 25 * * *"}, "invalid cron expression '0 25 \\* \\* \\*'"),
        ({"timezone": "Europe/Atlantis"}, "unknown timezone 'Europe/Atlantis'"),
        ({"calendar": "MOON"}, "unknown trading calendar 'MOON'"),
        ({"max_active_runs": 0}, "max_active_runs must be between 1 and 1000"),
        ({"misfire_window_seconds": -1}, "misfire_window_seconds must be between 0 and"),
    ],
)
def test_invalid_updates_are_refused_with_a_clear_message(changes, message):
    with pytest.raises(ScheduleError, match=message):
        validated_changes(changes)


def test_update_values_are_normalised():
    assert validated_changes(
        {"calendar": "xlon", "timezone": "Europe/London", "default_params": {"symbols": ["AAPL"]}, "paused": True}
    ) == {"calendar": "XLON", "timezone": "Europe/London", "default_params": {"symbols": ["AAPL"]}, "paused": True}
    assert validated_changes({"calendar": "none", "default_params": None}) == {"calendar": None, "default_params": {}}


def test_a_cron_that_only_hits_holidays_still_has_an_answer_for_years_ahead():
    """`0 9 1 1 *` on XNYS: every slot is New Year's Day; the look-ahead crosses calendar blocks."""
    from datetime import date

    from services.scheduler.trading_calendar import is_trading_day

    for year in range(2026, 2046):
        assert is_trading_day("XNYS", date(year, 1, 1)) is False
    assert is_trading_day("XNYS", date(2040, 1, 3)) is True
    assert is_trading_day("XNYS", date(2041, 1, 2)) is True
    new_years_only = dataclasses.replace(policy(calendar="XNYS"), cron="0 9 1 1 *")
    assert next_fire_times(new_years_only, after=datetime(2026, 11, 28, tzinfo=UTC), count=5) == []
