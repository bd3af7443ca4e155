"""Run states that tell the truth: external, partial, skipped, and the abandoned rule."""

from datetime import UTC, datetime, timedelta
from itertools import permutations

import pytest

from services.artifacts.api.mapping import run_detail, run_summary
from services.artifacts.db.models import Run
from services.artifacts.ingest.lifecycle import apply_event
from services.artifacts.queries.runs import RunFilters, abandoned_since
from shared.events import (
    ArtifactCreated,
    FailedItem,
    LogRecorded,
    RunFailed,
    RunPartiallySucceeded,
    RunRequested,
    RunStarted,
    RunSucceeded,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 3, 14, 30, tzinfo=UTC)
IDS = {"workflow_id": "ibkr_trading_signal_workflow", "execution_id": "run-1"}
OUTSIDE = {"workflow_id": "my_dag", "execution_id": "my_dag__2026-11-28"}
STEPS = ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]
TSLA = FailedItem(
    item="TSLA",
    step="fetch_market_data",
    reason="no security definition: IBKR does not know this contract: No security definition (code 200)",
    code=200,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fold(*events) -> Run:
    first = min(e.occurred_at for e in events)
    # What store_batch inserts for a run it has not seen before.
    run = Run(
        execution_id=events[0].execution_id,
        workflow_id=events[0].workflow_id,
        status="queued",
        opened_at=first,
        params={},
        summary={},
        planned_steps=[],
        failed_items=[],
        artifact_count=0,
        log_count=0,
        steps=[],
    )
    for event in events:
        apply_event(run, event)
    return run


def step(run: Run, name: str):
    return next(s for s in run.steps if s.step_name == name)


def outside_artifact(seconds: float = 0) -> ArtifactCreated:
    return ArtifactCreated(
        **OUTSIDE, step_name="train", name="validation metrics", kind="metrics", payload={"auc": 0.71},
        dag_id="my_dag", task_id="train", occurred_at=at(seconds),
    )


# --- external ---------------------------------------------------------------------------


def test_an_outside_producers_artifact_makes_an_external_run_not_a_running_one():
    run = fold(outside_artifact())
    assert run.status == "external"
    assert run.last_event_at == at(0)
    # Its step is not running either: ibflow knows nothing of its lifecycle.
    assert [(s.step_name, s.status, s.attempt) for s in run.steps] == [("train", "external", 0)]


def test_an_external_run_stays_external_with_more_artifacts_and_logs():
    run = fold(
        outside_artifact(0),
        LogRecorded(**OUTSIDE, step_name="train", message="fitted", occurred_at=at(5)),
        outside_artifact(3),
    )
    assert run.status == "external"
    assert run.last_event_at == at(5)


def test_an_outside_producer_may_close_its_run_with_an_outcome():
    closed = fold(outside_artifact(0), RunSucceeded(**OUTSIDE, occurred_at=at(9)))
    assert (closed.status, closed.steps[0].status) == ("succeeded", "external")
    failed = fold(outside_artifact(0), RunFailed(**OUTSIDE, error="task train failed", occurred_at=at(9)))
    assert (failed.status, failed.error) == ("failed", "task train failed")


def test_an_outside_run_started_without_an_end_is_running_until_the_abandoned_rule_applies():
    run = fold(RunStarted(**OUTSIDE, occurred_at=at(0)), outside_artifact(5))
    assert run.status == "running"


def test_a_request_or_start_arriving_after_an_early_artifact_makes_an_ibflow_run_running():
    for late in (RunRequested(**IDS, trigger="manual", occurred_at=at(0)), RunStarted(**IDS, occurred_at=at(1))):
        artifact = ArtifactCreated(**IDS, step_name="fetch_market_data", name="market_data", kind="dataset",
                                   payload={}, occurred_at=at(2))
        run = fold(artifact)
        assert (run.status, step(run, "fetch_market_data").status) == ("external", "external")
        apply_event(run, late)
        assert (run.status, step(run, "fetch_market_data").status) == ("running", "running"), late


def test_a_requested_run_is_queued_and_running_once_anything_else_arrives():
    run = fold(RunRequested(**IDS, trigger="manual", occurred_at=at(0)))
    assert run.status == "queued"
    apply_event(run, LogRecorded(**IDS, message="run started", occurred_at=at(1)))
    assert run.status == "running"


# --- partial ----------------------------------------------------------------------------


def test_run_partial_is_its_own_outcome_with_the_failed_items():
    run = fold(
        RunRequested(**IDS, trigger="manual", occurred_at=at(0)),
        RunStarted(**IDS, steps=STEPS, occurred_at=at(1)),
        RunPartiallySucceeded(**IDS, summary={"signals": {"AAPL": "HOLD"}}, failed_items=[TSLA], occurred_at=at(9)),
    )
    assert run.status == "partial"
    assert run.error is None
    assert run.summary == {"signals": {"AAPL": "HOLD"}}
    assert run.failed_items == [
        {"item": "TSLA", "step": "fetch_market_data", "reason": TSLA.reason, "code": 200}
    ]


def test_a_partial_run_is_not_undone_by_late_events_in_any_order():
    events = [
        RunRequested(**IDS, trigger="manual", occurred_at=at(0)),
        RunStarted(**IDS, steps=STEPS, occurred_at=at(1)),
        LogRecorded(**IDS, step_name="fetch_market_data", level="WARNING", message="TSLA skipped", occurred_at=at(2)),
        RunPartiallySucceeded(**IDS, failed_items=[TSLA], occurred_at=at(9)),
    ]
    for order in permutations(events):
        run = fold(*order)
        assert (run.status, run.finished_at, run.last_event_at) == ("partial", at(9), at(9)), order


def test_of_a_partial_and_a_succeeded_outcome_the_later_one_wins():
    partial = RunPartiallySucceeded(**IDS, failed_items=[TSLA], occurred_at=at(9))
    succeeded = RunSucceeded(**IDS, occurred_at=at(20))
    for order in ((partial, succeeded), (succeeded, partial)):
        run = fold(*order)
        assert (run.status, run.failed_items) == ("succeeded", [])


def test_a_failed_run_keeps_the_items_that_had_failed_before_it():
    run = fold(RunFailed(**IDS, error="step generate_signals failed", failed_items=[TSLA], occurred_at=at(9)))
    assert run.status == "failed"
    assert [item["item"] for item in run.failed_items] == ["TSLA"]


def test_run_partial_needs_at_least_one_failed_item():
    with pytest.raises(ValueError, match="failed_items"):
        RunPartiallySucceeded(**IDS, failed_items=[])


# --- skipped ----------------------------------------------------------------------------


def failed_run_events() -> list:
    reason = "step fetch_market_data failed"
    return [
        RunStarted(**IDS, steps=STEPS, occurred_at=at(0)),
        StepStarted(**IDS, step_name="fetch_market_data", occurred_at=at(1)),
        StepFailed(**IDS, step_name="fetch_market_data", error="NoMarketDataError: none", occurred_at=at(2)),
        *[StepSkipped(**IDS, step_name=name, reason=reason, occurred_at=at(3)) for name in STEPS[1:]],
        RunFailed(**IDS, error="step fetch_market_data failed: NoMarketDataError: none", occurred_at=at(4)),
    ]


def test_steps_after_a_failed_step_are_skipped_with_the_reason():
    run = fold(*failed_run_events())
    assert [(s.step_name, s.status) for s in run.steps] == [
        ("fetch_market_data", "failed"),
        ("compute_features", "skipped"),
        ("generate_signals", "skipped"),
        ("publish_signals", "skipped"),
    ]
    assert step(run, "generate_signals").skipped_reason == "step fetch_market_data failed"
    assert step(run, "generate_signals").finished_at == at(3)


def test_skipped_steps_fold_the_same_whatever_the_arrival_order():
    events = failed_run_events()
    for order in (events[::-1], events[3:] + events[:3]):
        run = fold(*order)
        assert [s.status for s in run.steps] == ["failed", "skipped", "skipped", "skipped"]


def test_a_real_attempt_of_a_step_supersedes_its_skip_and_a_late_skip_changes_nothing():
    reason = "step fetch_market_data failed"
    skipped = StepSkipped(**IDS, step_name="compute_features", reason=reason, occurred_at=at(3))
    started = StepStarted(**IDS, step_name="compute_features", occurred_at=at(10))
    succeeded = StepSucceeded(**IDS, step_name="compute_features", occurred_at=at(12))
    for order in permutations((skipped, started, succeeded)):
        s = step(fold(*order), "compute_features")
        assert (s.status, s.skipped_reason, s.finished_at) == ("succeeded", None, at(12)), order


# --- abandoned --------------------------------------------------------------------------


def test_an_open_run_quiet_for_longer_than_the_limit_is_shown_as_abandoned():
    run = fold(
        RunRequested(**IDS, trigger="manual", occurred_at=at(0)), RunStarted(**IDS, steps=STEPS, occurred_at=at(1))
    )
    now = at(7 * 3600)
    cutoff = now - timedelta(hours=6)
    assert abandoned_since(run, cutoff) == at(1)
    summary = run_summary(run, 4, 0, now=now, abandoned_before=cutoff)
    assert summary.status == "abandoned"
    assert summary.error.startswith("no event since 2025-03-03 14:30:01 UTC")
    assert "ARTIFACTS_RUN_ABANDONED_AFTER_SECONDS" in summary.error
    assert summary.duration_seconds is None
    # The stored status is untouched: its next event, if one ever comes, revives it.
    assert run.status == "running"
    apply_event(run, LogRecorded(**IDS, message="still here", occurred_at=at(7 * 3600 - 60)))
    assert run_summary(run, 4, 0, now=now, abandoned_before=cutoff).status == "running"


def test_a_run_with_an_outcome_or_an_external_one_is_never_abandoned():
    cutoff = at(10 * 3600)
    for run in (
        fold(RunSucceeded(**IDS, occurred_at=at(0))),
        fold(RunPartiallySucceeded(**IDS, failed_items=[TSLA], occurred_at=at(0))),
        fold(outside_artifact()),
    ):
        assert abandoned_since(run, cutoff) is None
        assert run_summary(run, 0, 0, abandoned_before=cutoff).status == run.status


def test_a_recent_run_is_not_abandoned():
    run = fold(RunStarted(**IDS, occurred_at=at(0)))
    assert run_summary(run, 0, 0, now=at(60), abandoned_before=at(60) - timedelta(hours=6)).status == "running"


def test_the_abandoned_filter_selects_open_runs_quiet_since_the_cutoff():
    cutoff = at(0)
    abandoned = " ".join(str(c.compile(compile_kwargs={"literal_binds": True}))
                         for c in RunFilters(status="abandoned", abandoned_before=cutoff).conditions())
    assert "runs.status IN ('queued', 'running')" in abandoned
    assert "coalesce(runs.last_event_at, runs.opened_at) <" in abandoned
    running = " ".join(str(c.compile(compile_kwargs={"literal_binds": True}))
                       for c in RunFilters(status="running", abandoned_before=cutoff).conditions())
    assert "runs.status = 'running'" in running and "coalesce(runs.last_event_at, runs.opened_at) >=" in running
    partial = [str(c.compile(compile_kwargs={"literal_binds": True}))
               for c in RunFilters(status="partial", abandoned_before=cutoff).conditions()]
    assert partial == ["runs.status = 'partial'"]


# --- the API's view ---------------------------------------------------------------------


def test_run_detail_shows_partial_failed_items_and_skipped_steps():
    partial = fold(
        RunStarted(**IDS, steps=STEPS, occurred_at=at(0)),
        *[StepSucceeded(**IDS, step_name=name, occurred_at=at(i + 1)) for i, name in enumerate(STEPS)],
        RunPartiallySucceeded(**IDS, failed_items=[TSLA], occurred_at=at(9)),
    )
    detail = run_detail(partial, now=at(10), abandoned_before=at(0))
    assert (detail.status, detail.progress, detail.steps_finished) == ("partial", 1.0, 4)
    assert [item.model_dump() for item in detail.failed_items] == [TSLA.model_dump()]

    failed = run_detail(fold(*failed_run_events()), now=at(10), abandoned_before=at(0))
    assert failed.status == "failed"
    assert (failed.steps_total, failed.steps_finished) == (4, 1)
    assert [s.skipped_reason for s in failed.steps] == [None, *["step fetch_market_data failed"] * 3]
