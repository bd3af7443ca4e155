"""A run's events go out without a broker round trip each; a lifecycle event waits
for the acknowledgement of everything before it, and a refusal raises there."""

from __future__ import annotations

import asyncio

import pytest

from services.signals.workflow.emitter import PublishError, RunEmitter, StepLog
from shared.events import StepStarted, StepSucceeded

pytestmark = pytest.mark.unit


class Producer:
    """Hands back one future per event, settled only when the test says."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.acks: dict[str, asyncio.Future] = {}

    async def __call__(self, event):
        name = getattr(event, "message", None) or event.event_type
        self.sent.append(name)
        self.acks[name] = asyncio.get_running_loop().create_future()
        return self.acks[name]


async def test_logs_do_not_wait_but_the_next_step_event_waits_for_them():
    producer = Producer()
    emitter = RunEmitter(producer, workflow_id="wf", execution_id="e-1")
    producer_started = asyncio.create_task(emitter.emit(StepStarted, "s", step_name="a", attempt=1))
    await asyncio.sleep(0)
    producer.acks["step.started"].set_result(None)
    await producer_started
    log = StepLog(emitter, "a")
    await log.info("one")
    await log.info("two")  # sent while "one" is not acknowledged yet
    assert producer.sent == ["step.started", "one", "two"]

    done = asyncio.create_task(emitter.emit(StepSucceeded, "d", step_name="a", attempt=1))
    await asyncio.sleep(0.05)
    assert producer.sent == ["step.started", "one", "two"], "step.succeeded went out before its logs were stored"
    producer.acks["one"].set_result(None)
    producer.acks["two"].set_result(None)
    await asyncio.sleep(0.05)
    assert producer.sent[-1] == "step.succeeded" and not done.done()
    producer.acks["step.succeeded"].set_result(None)
    await done


async def test_a_refused_event_raises_publish_error_at_the_next_lifecycle_event():
    producer = Producer()
    emitter = RunEmitter(producer, workflow_id="wf", execution_id="e-2")
    await StepLog(emitter, "a").info("lost")
    producer.acks["lost"].set_exception(RuntimeError("broker said no"))
    with pytest.raises(PublishError, match="broker said no"):
        await emitter.emit(StepSucceeded, "d", step_name="a", attempt=1)


async def test_a_publisher_that_waits_itself_is_unchanged():
    seen = []

    async def publish(event):
        seen.append(event.event_type)

    emitter = RunEmitter(publish, workflow_id="wf", execution_id="e-3")
    await StepLog(emitter, "a").info("x")
    await emitter.emit(StepSucceeded, "d", step_name="a", attempt=1)
    assert seen == ["log.record", "step.succeeded"]
