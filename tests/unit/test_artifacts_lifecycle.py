"""How events move a run and its steps along, in any order, replayed or not."""

from datetime import UTC, datetime, timedelta

import pytest

from services.artifacts.db.models import Run
from services.artifacts.ingest.lifecycle import apply_event
from shared.events import (
    ArtifactCreated,
    LogRecorded,
    RunFailed,
    RunRequested,
    RunStarted,
    RunSucceeded,
    StepFailed,
    StepStarted,
    StepSucceeded,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 3, 14, 30, tzinfo=UTC)
IDS = {"workflow_id": "ibkr_trading_signal_workflow", "execution_id": "run-1"}
STEPS = ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fresh_run(first_at: datetime = T0) -> Run:
    # What store_batch inserts for a run it has not seen before.
    return Run(
        execution_id="run-1",
        workflow_id=IDS["workflow_id"],
        status="queued",
        opened_at=first_at,
        params={},
        summary={},
        planned_steps=[],
        artifact_count=0,
        log_count=0,
        steps=[],
    )


def fold(*events) -> Run:
    run = fresh_run(min(e.occurred_at for e in events))
    for event in events:
        apply_event(run, event)
    return run


def step(run: Run, name: str):
    return next(s for s in run.steps if s.step_name == name)


def test_a_requested_run_is_queued_with_its_trigger_and_params():
    run = fold(RunRequested(**IDS, trigger="manual", params={"symbols": ["AAPL"]}, occurred_at=at(0)))
    assert run.status == "queued"
    assert run.trigger == "manual"
    assert run.params == {"symbols": ["AAPL"]}
    assert run.requested_at == at(0)


def test_run_started_plans_the_steps_in_order_as_pending():
    run = fold(
        RunRequested(**IDS, trigger="schedule", occurred_at=at(0)), RunStarted(**IDS, steps=STEPS, occurred_at=at(1))
    )
    assert run.status == "running"
    assert run.started_at == at(1)
    assert [(s.step_name, s.status, s.position) for s in run.steps] == [
        (name, "pending", i) for i, name in enumerate(STEPS)
    ]


def test_a_late_step_started_does_not_undo_step_succeeded_but_fills_its_start_time():
    run = fold(
        StepSucceeded(**IDS, step_name="fetch_market_data", occurred_at=at(5)),
        StepStarted(**IDS, step_name="fetch_market_data", occurred_at=at(2)),
    )
    s = step(run, "fetch_market_data")
    assert (s.status, s.attempt, s.started_at, s.finished_at) == ("succeeded", 1, at(2), at(5))


def test_a_replayed_started_after_success_changes_nothing():
    run = fold(
        StepStarted(**IDS, step_name="compute_features", occurred_at=at(1)),
        StepSucceeded(**IDS, step_name="compute_features", occurred_at=at(3)),
    )
    apply_event(run, StepStarted(**IDS, step_name="compute_features", occurred_at=at(1)))
    s = step(run, "compute_features")
    assert (s.status, s.started_at, s.finished_at) == ("succeeded", at(1), at(3))


def test_a_retry_attempt_supersedes_the_failed_one_whatever_the_arrival_order():
    events = [
        StepStarted(**IDS, step_name="fetch_market_data", attempt=1, occurred_at=at(1)),
        StepFailed(**IDS, step_name="fetch_market_data", attempt=1, error="pacing violation", occurred_at=at(2)),
        StepStarted(**IDS, step_name="fetch_market_data", attempt=2, occurred_at=at(10)),
        StepSucceeded(**IDS, step_name="fetch_market_data", attempt=2, occurred_at=at(12)),
    ]
    for order in (events, events[::-1], [events[2], events[0], events[3], events[1]]):
        s = step(fold(*order), "fetch_market_data")
        assert (s.status, s.attempt, s.started_at, s.finished_at, s.error) == ("succeeded", 2, at(10), at(12), None)


def test_a_failed_step_keeps_its_error():
    run = fold(
        StepStarted(**IDS, step_name="generate_signals", occurred_at=at(1)),
        StepFailed(**IDS, step_name="generate_signals", error="model diverged", occurred_at=at(2)),
    )
    assert (step(run, "generate_signals").status, step(run, "generate_signals").error) == ("failed", "model diverged")


def test_a_log_before_run_started_makes_the_step_known_and_the_run_running_once_started():
    run = fold(LogRecorded(**IDS, step_name="fetch_market_data", message="connecting", occurred_at=at(0)))
    # Nothing yet says ibflow runs it (topics are not ordered with each other).
    assert run.status == "external"
    assert (step(run, "fetch_market_data").status, step(run, "fetch_market_data").attempt) == ("external", 0)
    # run.started arriving later puts the already-known step in its planned place.
    apply_event(run, RunStarted(**IDS, steps=STEPS[::-1], occurred_at=at(-1)))
    assert run.status == "running"
    assert step(run, "fetch_market_data").status == "running"
    assert [s.step_name for s in run.steps] == STEPS[::-1]
    assert run.opened_at == at(-1)


def test_run_terminal_status_is_not_undone_by_late_events():
    run = fold(
        RunStarted(**IDS, occurred_at=at(1)),
        RunSucceeded(**IDS, summary={"signals": 4}, occurred_at=at(9)),
        RunRequested(**IDS, trigger="manual", occurred_at=at(0)),
        ArtifactCreated(**IDS, name="late", kind="report", payload={}, occurred_at=at(8)),
    )
    assert run.status == "succeeded"
    assert run.finished_at == at(9)
    assert run.summary == {"signals": 4}
    assert run.requested_at == at(0)


def test_of_two_terminal_events_the_later_one_is_the_outcome():
    failed = RunFailed(**IDS, error="gateway down", occurred_at=at(9))
    succeeded = RunSucceeded(**IDS, occurred_at=at(5))
    for order in ((failed, succeeded), (succeeded, failed)):
        run = fold(*order)
        assert (run.status, run.error, run.finished_at) == ("failed", "gateway down", at(9))


def test_run_started_params_win_over_the_requested_ones():
    run = fold(
        RunStarted(**IDS, params={"symbols": ["AAPL", "MSFT"]}, occurred_at=at(1)),
        RunRequested(**IDS, trigger="schedule", occurred_at=at(0)),
    )
    assert run.params == {"symbols": ["AAPL", "MSFT"]}
    assert run.trigger == "schedule"
