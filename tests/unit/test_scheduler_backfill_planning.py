"""Planning a backfill: which sessions get a run, what each run is called, how a
session's state and the backfill's status are told. No database."""

from datetime import UTC, date, datetime, timedelta

import pytest

from services.scheduler.backfills import BackfillError, Counts, plan_sessions, run_state, session_instant
from services.scheduler.execution_ids import backfill_execution_id

pytestmark = pytest.mark.unit

TODAY = date(2026, 12, 17)


def test_the_summer_of_2012_is_one_run_per_nyse_session():
    sessions = plan_sessions("XNYS", date(2012, 6, 1), date(2012, 8, 31), today=TODAY)
    every_day = [date(2012, 6, 1) + timedelta(days=n) for n in range(92)]
    weekdays = [d for d in every_day if d.weekday() < 5]
    assert sessions == [d for d in weekdays if d != date(2012, 7, 4)]
    assert (len(sessions), sessions[0], sessions[-1]) == (65, date(2012, 6, 1), date(2012, 8, 31))


def test_hurricane_sandy_closed_the_exchange_for_two_days():
    sessions = plan_sessions("XNYS", date(2012, 10, 26), date(2012, 11, 2), today=TODAY)
    assert sessions == [date(2012, 10, 26), date(2012, 10, 31), date(2012, 11, 1), date(2012, 11, 2)]


def test_a_range_over_two_decades_is_planned_in_order():
    sessions = plan_sessions("XNYS", date(2009, 12, 28), date(2010, 1, 6), today=TODAY)
    assert sessions == [date(2009, 12, 28), date(2009, 12, 29), date(2009, 12, 30), date(2009, 12, 31),
                        date(2010, 1, 4), date(2010, 1, 5), date(2010, 1, 6)]


def test_another_exchange_has_its_own_holidays():
    # Boxing Day and the August bank holiday are London's, not New York's
    assert date(2012, 12, 26) not in plan_sessions("XLON", date(2012, 12, 24), date(2012, 12, 31), today=TODAY)
    assert date(2012, 12, 26) in plan_sessions("XNYS", date(2012, 12, 24), date(2012, 12, 31), today=TODAY)


@pytest.mark.parametrize(
    ("start", "end", "problem"),
    [
        (date(2012, 6, 5), date(2012, 6, 1), "start 2012-06-05 is after end 2012-06-01"),
        (date(2026, 12, 1), date(2026, 12, 18), "end 2026-12-18 is after today (2026-12-17)"),
        (date(2012, 12, 25), date(2012, 12, 25), "no XNYS trading session from 2012-12-25 to 2012-12-25"),
    ],
)
def test_a_range_without_runs_to_make_says_why(start, end, problem):
    with pytest.raises(BackfillError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        plan_sessions("XNYS", start, end, today=TODAY)


def test_the_run_of_a_session_is_named_by_its_date_only():
    assert backfill_execution_id("ibkr_trading_signal_workflow", date(2012, 6, 1)) == (
        "backfill-ibkr_trading_signal_workflow-20120601")


def test_a_runs_nominal_time_is_its_sessions_close():
    assert session_instant("XNYS", date(2012, 6, 1)) == datetime(2012, 6, 1, 20, 0, tzinfo=UTC)
    assert session_instant("XNYS", date(2012, 11, 23)) == datetime(2012, 11, 23, 18, 0, tzinfo=UTC)  # half day


@pytest.mark.parametrize(
    ("row", "tracked", "state"),
    [
        ("queued", None, "queued"),
        ("cancelled", None, "cancelled"),
        ("released", "requested", "running"),
        ("released", "running", "running"),
        ("existing", "succeeded", "succeeded"),
        ("released", "partial", "partial"),
        ("released", "failed", "failed"),
    ],
)
def test_a_sessions_state_comes_from_its_row_then_its_run(row, tracked, state):
    assert run_state(row, tracked) == state


@pytest.mark.parametrize(
    ("counts", "status"),
    [
        (Counts(planned=3, queued=1, succeeded=2), "running"),
        (Counts(planned=3, running=1, failed=2), "running"),
        (Counts(planned=3, succeeded=3), "succeeded"),
        (Counts(planned=3, succeeded=2, partial=1), "partial"),
        (Counts(planned=3, succeeded=1, partial=1, failed=1), "failed"),
    ],
)
def test_a_backfill_is_running_until_every_run_ended_then_its_worst_outcome(counts, status):
    assert counts.status == status
