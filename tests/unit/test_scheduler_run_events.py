"""The run-events consumer dead-letters what it cannot read (in-memory broker)."""

from __future__ import annotations

import json

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from services.scheduler.clock import SystemClock
from services.scheduler.run_events import CONSUMER_NAME, subscribe_run_events
from services.scheduler.settings import SchedulerSettings
from shared import topics
from shared.events import ArtifactCreated

pytestmark = pytest.mark.unit


class NoDatabase:
    """The dead-letter path must not touch the database."""

    def begin(self):
        raise AssertionError("the database was used for an undecodable event")


@pytest.fixture
def settings() -> SchedulerSettings:
    return SchedulerSettings(database_url="postgresql://nobody@127.0.0.1:1/none", kafka_bootstrap_servers="memory")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff not json", "not valid UTF-8 JSON"),
        # FastStream's own decoder would raise on these before the handler ran
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested too deeply"),
        (b'{"event_type": "run.started", "n": ' + b"9" * 5000 + b"}", "not acceptable JSON"),
        (b'{"event_type": "run.started", "workflow_id": "w"}', "execution_id"),
        (
            ArtifactCreated(workflow_id="w", execution_id="e", name="n", kind="dataset", payload={}).to_bytes(),
            "does not belong here",
        ),
    ],
)
async def test_undecodable_run_events_go_to_the_deadletter_topic(settings, value, reason):
    broker = KafkaBroker()
    subscribe_run_events(broker, settings, NoDatabase(), SystemClock())
    dead_letters = []

    @broker.subscriber(topics.DEADLETTER)
    async def collect(message: KafkaMessage) -> None:
        dead_letters.append(json.loads(message.body))

    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(value, topic=topics.RUNS_EVENTS, key=b"exec-1")

    [dead] = dead_letters
    assert dead["consumer"] == CONSUMER_NAME
    assert dead["source_topic"] == topics.RUNS_EVENTS
    assert dead["source_key"] == "exec-1"
    assert reason in dead["reason"]
    assert dead["original_value"] == value.decode("utf-8", "replace")
