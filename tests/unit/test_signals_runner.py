"""The step runner with in-memory fakes: lifecycle order, failures, timeouts, event ids."""

import asyncio
import dataclasses
import uuid

import pytest

from services.signals.market_data.sample_file import SampleFileProvider
from services.signals.workflow.emitter import PublishError, event_id_for
from services.signals.workflow.runner import (
    RunResources,
    Step,
    StepContext,
    Workflow,
    reject_run,
    run_workflow,
)
from shared.artifact_store import ArtifactStore
from shared.events import Event, RunParams, RunRequested

pytestmark = pytest.mark.unit

WORKFLOW_ID = "test_workflow"


class Recorder:
    """The broker, in memory: every published event in order."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.events: list[Event] = []
        self._fail_on = fail_on

    async def __call__(self, event: Event) -> None:
        if event.event_type == self._fail_on:
            raise ConnectionError("broker went away")
        self.events.append(event)

    def types(self) -> list[str]:
        return [e.event_type for e in self.events]

    def lifecycle(self) -> list[tuple[str, str | None]]:
        return [(e.event_type, e.step_name) for e in self.events if e.topic == "ibflow.runs.events"]

    def logs(self, level: str | None = None) -> list:
        return [e for e in self.events if e.event_type == "log.record" and (level is None or e.level == level)]


async def no_previous_run(*, workflow_id: str, execution_id: str):
    return None


@pytest.fixture
def resources(tmp_path) -> RunResources:
    return RunResources(
        provider=SampleFileProvider(),
        store=ArtifactStore.from_url(tmp_path.as_uri()),
        watchlist=("AAPL", "MSFT"),
        history_days=365,
        step_timeout_seconds=5.0,
        inline_max_bytes=64 * 1024,
        previous_signals=no_previous_run,
    )


def request(symbols: list[str] | None = None, execution_id: str | None = None) -> RunRequested:
    return RunRequested(
        workflow_id=WORKFLOW_ID,
        execution_id=execution_id or f"exec-{uuid.uuid4().hex[:8]}",
        trigger="manual",
        params=RunParams(symbols=symbols),
    )


async def first(ctx: StepContext, previous):
    await ctx.log.info("first step working", symbols=list(ctx.symbols), nested={"a": [1, 2]})
    await ctx.artifacts.json("numbers", "metrics", {"n": 1})
    return {"from_first": 1}


async def second(ctx: StepContext, previous):
    assert previous == {"from_first": 1}
    await ctx.artifacts.json("more", "metrics", {"n": 2})
    return {"result": "done"}


async def explode(ctx: StepContext, previous):
    raise ValueError("the bars are upside down")


async def never_called(ctx: StepContext, previous):
    raise AssertionError("a step after a failed step ran")


async def test_a_successful_run_emits_lifecycle_events_in_order(resources):
    recorder = Recorder()
    workflow = Workflow(WORKFLOW_ID, (Step("first", first), Step("second", second)))
    outcome = await run_workflow(workflow, request(), resources, recorder)

    assert outcome.status == "succeeded" and outcome.error is None
    assert recorder.lifecycle() == [
        ("run.started", None),
        ("step.started", "first"),
        ("step.succeeded", "first"),
        ("step.started", "second"),
        ("step.succeeded", "second"),
        ("run.succeeded", None),
    ]
    started = recorder.events[0]
    assert started.steps == ["first", "second"] and started.trigger == "manual"
    assert started.params == {"symbols": ["AAPL", "MSFT"]}
    succeeded = recorder.events[-1]
    assert succeeded.summary["result"] == "done" and succeeded.summary["artifact_count"] == 2
    # every event names its run
    assert {(e.workflow_id, e.execution_id) for e in recorder.events} == {(WORKFLOW_ID, outcome.execution_id)}


async def test_artifacts_and_logs_carry_their_step_and_fields_stay_objects(resources):
    recorder = Recorder()
    workflow = Workflow(WORKFLOW_ID, (Step("first", first), Step("second", second)))
    await run_workflow(workflow, request(), resources, recorder)

    artifacts = [e for e in recorder.events if e.event_type == "artifact.created"]
    assert [(a.step_name, a.name, a.payload) for a in artifacts] == [
        ("first", "numbers", {"n": 1}),
        ("second", "more", {"n": 2}),
    ]
    working = next(e for e in recorder.logs() if e.message == "first step working")
    assert working.step_name == "first" and working.logger == "signals.first"
    assert working.fields == {"symbols": ["AAPL", "MSFT"], "nested": {"a": [1, 2]}}
    assert b'"fields":{"symbols":["AAPL","MSFT"],"nested":{"a":[1,2]}}' in working.to_bytes()


async def test_a_step_that_raises_fails_the_step_and_the_run_with_an_error_log(resources):
    recorder = Recorder()
    workflow = Workflow(
        WORKFLOW_ID, (Step("first", first), Step("broken", explode), Step("after", never_called))
    )
    outcome = await run_workflow(workflow, request(), resources, recorder)

    assert outcome.status == "failed" and outcome.failed_step == "broken"
    assert outcome.error == "step broken failed: ValueError: the bars are upside down"
    assert recorder.lifecycle() == [
        ("run.started", None),
        ("step.started", "first"),
        ("step.succeeded", "first"),
        ("step.started", "broken"),
        ("step.failed", "broken"),
        ("step.skipped", "after"),
        ("run.failed", None),
    ]
    skipped = next(e for e in recorder.events if e.event_type == "step.skipped")
    assert skipped.reason == outcome.error
    step_failed = next(e for e in recorder.events if e.event_type == "step.failed")
    assert step_failed.error == "ValueError: the bars are upside down" and step_failed.attempt == 1
    assert recorder.events[-1].error == outcome.error

    (error_log,) = recorder.logs("ERROR")
    assert error_log.step_name == "broken"
    assert error_log.message == "step broken failed: ValueError: the bars are upside down"
    assert error_log.fields["error_type"] == "ValueError"
    assert isinstance(error_log.fields["traceback"], list)
    assert any("in explode" in frame for frame in error_log.fields["traceback"])
    # the error log is out before the step and the run are marked failed
    assert recorder.events.index(error_log) < recorder.events.index(step_failed)


async def test_a_step_that_overruns_its_timeout_fails(resources):
    async def slow(ctx, previous):
        await asyncio.sleep(30)

    recorder = Recorder()
    quick = dataclasses.replace(resources, step_timeout_seconds=0.05)
    outcome = await run_workflow(Workflow(WORKFLOW_ID, (Step("slow", slow),)), request(), quick, recorder)
    assert outcome.status == "failed"
    assert outcome.error == "step slow failed: step timed out after 0.05 s (STEP_TIMEOUT_SECONDS)"
    assert recorder.logs("ERROR")[0].fields["error_type"] == "TimeoutError"


async def test_a_broker_that_refuses_events_is_not_a_step_outcome(resources):
    recorder = Recorder(fail_on="artifact.created")
    workflow = Workflow(WORKFLOW_ID, (Step("first", first), Step("second", second)))
    with pytest.raises(PublishError, match="artifact.created"):
        await run_workflow(workflow, request(), resources, recorder)
    assert "step.failed" not in recorder.types() and "run.failed" not in recorder.types()


async def test_a_rerun_of_the_same_execution_emits_the_same_event_ids(resources):
    workflow = Workflow(WORKFLOW_ID, (Step("first", first), Step("second", second)))
    first_run, second_run = Recorder(), Recorder()
    await run_workflow(workflow, request(execution_id="exec-same"), resources, first_run)
    await run_workflow(workflow, request(execution_id="exec-same"), resources, second_run)

    first_ids = [e.event_id for e in first_run.events]
    assert first_ids == [e.event_id for e in second_run.events]
    assert len(set(first_ids)) == len(first_ids)
    artifact_ids = [e.artifact_id for e in first_run.events if e.event_type == "artifact.created"]
    assert artifact_ids == [e.artifact_id for e in second_run.events if e.event_type == "artifact.created"]
    assert first_run.events[0].event_id == event_id_for("exec-same", "run.started")

    other = Recorder()
    await run_workflow(workflow, request(execution_id="exec-other"), resources, other)
    assert not set(first_ids) & {e.event_id for e in other.events}


async def test_symbols_come_from_the_request_or_the_watchlist(resources):
    seen = []

    async def record_symbols(ctx, previous):
        seen.append(ctx.symbols)

    workflow = Workflow(WORKFLOW_ID, (Step("only", record_symbols),))
    await run_workflow(workflow, request(["IBM", "IBM", "GOOG"]), resources, Recorder())
    await run_workflow(workflow, request(), resources, Recorder())
    assert seen == [("IBM", "GOOG"), ("AAPL", "MSFT")]


async def test_a_request_for_a_workflow_the_service_does_not_run_fails_visibly():
    recorder = Recorder()
    outcome = await reject_run(request(), recorder, "unknown workflow 'test_workflow'")
    assert outcome.status == "failed"
    assert recorder.types() == ["log.record", "run.failed"]
    assert recorder.events[0].level == "ERROR" and recorder.events[1].error == "unknown workflow 'test_workflow'"
