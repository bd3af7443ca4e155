"""The runner's outcomes: succeeded only when nothing failed, partial with the failed
items, failed with the items that had failed before, skipped steps with the reason."""

import uuid

import pytest

from services.signals.market_data.sample_file import SampleFileProvider
from services.signals.workflow.runner import RunResources, Step, StepContext, Workflow, run_workflow
from shared.artifact_store import ArtifactStore
from shared.events import Event, RunParams, RunRequested, decode_event

pytestmark = pytest.mark.unit

WORKFLOW_ID = "test_workflow"


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        # What a consumer reads back: the bytes on the wire.
        self.events.append(decode_event(event.to_bytes()))

    def lifecycle(self) -> list[tuple[str, str | None]]:
        return [(e.event_type, e.step_name) for e in self.events if e.topic == "ibflow.runs.events"]

    def one(self, event_type: str) -> Event:
        [event] = [e for e in self.events if e.event_type == event_type]
        return event


async def no_previous_run(*, workflow_id: str, execution_id: str):
    return None


@pytest.fixture
def resources(tmp_path) -> RunResources:
    return RunResources(
        provider=SampleFileProvider(),
        store=ArtifactStore.from_url(tmp_path.as_uri()),
        watchlist=("AAPL",),
        history_days=365,
        step_timeout_seconds=5.0,
        inline_max_bytes=64 * 1024,
        previous_signals=no_previous_run,
    )


def request() -> RunRequested:
    return RunRequested(
        workflow_id=WORKFLOW_ID, execution_id=f"exec-{uuid.uuid4().hex[:8]}", trigger="manual",
        params=RunParams(symbols=["TSLA", "AAPL"]),
    )


async def fetch(ctx: StepContext, previous):
    ctx.item_failed("TSLA", "no security definition: IBKR does not know this contract\x00 (code 200)", code=200)
    return {"symbols": ["AAPL"]}


async def score(ctx: StepContext, previous):
    return {"signals": {"AAPL": "HOLD"}}


async def explode(ctx: StepContext, previous):
    raise RuntimeError("model diverged")


async def test_a_run_with_a_failed_item_is_partial_not_succeeded(resources):
    recorder = Recorder()
    outcome = await run_workflow(Workflow(WORKFLOW_ID, (Step("fetch", fetch), Step("score", score))), request(),
                                 resources, recorder)
    assert outcome.status == "partial"
    assert recorder.lifecycle()[-1] == ("run.partial", None)
    assert "run.succeeded" not in [e.event_type for e in recorder.events]
    partial = recorder.one("run.partial")
    [item] = partial.failed_items
    # What no event may hold (a NUL from the data source's text) is replaced, not fatal.
    assert (item.item, item.step, item.code) == ("TSLA", "fetch", 200)
    assert item.reason == "no security definition: IBKR does not know this contract\ufffd (code 200)"
    assert partial.summary["signals"] == {"AAPL": "HOLD"}
    assert outcome.failed_items == (item,)


async def test_a_run_without_failed_items_succeeds(resources):
    recorder = Recorder()
    outcome = await run_workflow(Workflow(WORKFLOW_ID, (Step("score", score),)), request(), resources, recorder)
    assert outcome.status == "succeeded" and outcome.failed_items == ()
    assert recorder.lifecycle()[-1] == ("run.succeeded", None)


async def test_a_failed_step_skips_the_rest_and_the_run_failure_keeps_the_failed_items(resources):
    recorder = Recorder()
    workflow = Workflow(WORKFLOW_ID, (Step("fetch", fetch), Step("train", explode), Step("a", score), Step("b", score)))
    outcome = await run_workflow(workflow, request(), resources, recorder)
    assert outcome.status == "failed" and outcome.failed_step == "train"
    assert recorder.lifecycle() == [
        ("run.started", None),
        ("step.started", "fetch"),
        ("step.succeeded", "fetch"),
        ("step.started", "train"),
        ("step.failed", "train"),
        ("step.skipped", "a"),
        ("step.skipped", "b"),
        ("run.failed", None),
    ]
    skipped = [e for e in recorder.events if e.event_type == "step.skipped"]
    assert {e.reason for e in skipped} == {"step train failed: RuntimeError: model diverged"}
    assert [i.item for i in recorder.one("run.failed").failed_items] == ["TSLA"]


async def test_a_redelivered_run_reuses_the_ids_of_its_partial_outcome_and_skips(resources):
    first, second = Recorder(), Recorder()
    workflow = Workflow(WORKFLOW_ID, (Step("fetch", fetch), Step("train", explode), Step("a", score)))
    req = request()
    await run_workflow(workflow, req, resources, first)
    await run_workflow(workflow, req, resources, second)
    lifecycle_ids = [[e.event_id for e in r.events if e.topic == "ibflow.runs.events"] for r in (first, second)]
    assert lifecycle_ids[0] == lifecycle_ids[1]
