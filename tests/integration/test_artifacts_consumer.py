"""The artifacts consumer against the real broker and a real PostgreSQL: exactly-once
storage by event_id, offsets committed only after the database commit, dead letters."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select

from services.artifacts.database import new_engine, new_sessionmaker
from services.artifacts.db.models import Artifact, LogRecord, Run, RunEvent
from services.artifacts.ingest.consumer import BatchConsumer
from services.artifacts.main import create_app
from services.artifacts.migrate import migrate
from services.artifacts.settings import ArtifactsSettings
from shared import topics
from shared.database import normalize_database_url
from shared.events import (
    ArtifactCreated,
    DeadLetter,
    LogRecorded,
    RunRequested,
    RunStarted,
    RunSucceeded,
    StepStarted,
    StepSucceeded,
)
from shared.http import serving
from shared.kafka import ensure_topics, new_broker
from shared.settings import KafkaSettings

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
WF = "ibkr_trading_signal_workflow"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def kafka_settings(kafka_env: dict) -> KafkaSettings:
    return KafkaSettings(**{key.lower(): value for key, value in kafka_env.items()})


def a_run(execution_id: str, logs: int = 5, artifacts: int = 2) -> list:
    ids = {"workflow_id": WF, "execution_id": execution_id}
    events = [
        RunRequested(**ids, trigger="manual"),
        RunStarted(**ids, steps=["fetch_market_data", "compute_features"]),
        StepStarted(**ids, step_name="fetch_market_data"),
    ]
    events += [
        LogRecorded(**ids, step_name="fetch_market_data", message=f"bar {i}", fields={"i": i}) for i in range(logs)
    ]
    events += [
        ArtifactCreated(**ids, step_name="fetch_market_data", name=f"a{i}", kind="dataset", payload={"i": i})
        for i in range(artifacts)
    ]
    events += [StepSucceeded(**ids, step_name="fetch_market_data"), RunSucceeded(**ids)]
    return events


async def produce(producer: AIOKafkaProducer, events) -> dict[TopicPartition, int]:
    """Send events in order; returns the highest offset written per partition."""
    written: dict[TopicPartition, int] = {}
    for event in events:
        meta = await producer.send_and_wait(event.topic, event.to_bytes(), key=event.key)
        tp = TopicPartition(meta.topic, meta.partition)
        written[tp] = max(written.get(tp, -1), meta.offset)
    return written


async def wait_until(check, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def wait_committed(bootstrap: str, group_id: str, written: dict[TopicPartition, int], timeout: float = 60.0):
    """Until the group's committed offsets are past everything `written`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:

        async def committed_past() -> bool:
            offsets = await admin.list_consumer_group_offsets(group_id, partitions=list(written))
            return all(offsets.get(tp) is not None and offsets[tp].offset > last for tp, last in written.items())

        await wait_until(committed_past, timeout, f"group {group_id} to commit past {written}")
    finally:
        await admin.close()


async def committed_offsets(bootstrap: str, group_id: str, tps) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id, partitions=list(tps))
        return {tp: (meta.offset if meta is not None else -1) for tp, meta in offsets.items()}
    finally:
        await admin.close()


async def counts(database_url: str, execution_id: str) -> dict[str, int]:
    engine = new_engine(normalize_database_url(database_url))
    try:
        async with new_sessionmaker(engine)() as session:
            run = await session.get(Run, execution_id)

            def count(model):
                return select(func.count()).select_from(model).where(model.execution_id == execution_id)

            return {
                "run_events": await session.scalar(count(RunEvent)),
                "artifacts": await session.scalar(count(Artifact)),
                "logs": await session.scalar(count(LogRecord)),
                "run_artifact_count": run.artifact_count if run else -1,
                "run_log_count": run.log_count if run else -1,
                "status": run.status if run else None,
            }
    finally:
        await engine.dispose()


def expected_counts(events) -> dict[str, int]:
    logs = sum(isinstance(e, LogRecorded) for e in events)
    artifacts = sum(isinstance(e, ArtifactCreated) for e in events)
    return {
        "run_events": len(events) - logs - artifacts,
        "artifacts": artifacts,
        "logs": logs,
        "run_artifact_count": artifacts,
        "run_log_count": logs,
        "status": "succeeded",
    }


@pytest.fixture(scope="module")
async def producer(kafka_bootstrap) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    yield producer
    await producer.stop()


class Service:
    def __init__(self, client: httpx.AsyncClient, database_url: str, group_id: str):
        self.client, self.database_url, self.group_id = client, database_url, group_id


@pytest.fixture(scope="module")
async def service(new_database, kafka_env, kafka_bootstrap, producer) -> AsyncIterator[Service]:
    """The whole artifacts service (consumer and API), started once for the module."""
    url = new_database()
    await migrate(url)
    group_id = unique("ibflow-artifacts-test")
    settings = ArtifactsSettings(
        database_url=url,
        artifacts_consumer_group_id=group_id,
        artifacts_batch_max_records=50,
        **{key.lower(): value for key, value in kafka_env.items()},
    )
    async with serving(create_app(settings)) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield Service(client, url, group_id)


async def test_a_requested_run_is_queued_then_follows_its_events(service, producer):
    execution_id = unique("run-flow")
    events = a_run(execution_id)
    await produce(producer, events[:1])

    async def queued():
        response = await service.client.get(f"/api/runs/{execution_id}")
        return response.status_code == 200 and response.json()["status"] == "queued" and response.json()

    run = await wait_until(queued, what="the requested run to show as queued")
    assert run["trigger"] == "manual"
    await produce(producer, events[1:])

    async def finished():
        body = (await service.client.get(f"/api/runs/{execution_id}")).json()
        return body["status"] == "succeeded" and body["log_count"] == 5 and body["artifact_count"] == 2 and body

    run = await wait_until(finished, what="the run to finish with its logs and artifacts")
    assert [(s["step_name"], s["status"]) for s in run["steps"]] == [
        ("fetch_market_data", "succeeded"),
        ("compute_features", "pending"),
    ]
    logs = (await service.client.get(f"/api/runs/{execution_id}/logs")).json()["logs"]
    assert [r["fields"] for r in logs] == [{"i": i} for i in range(5)]
    health = (await service.client.get("/health")).json()
    assert health["components"]["consumer"]["status"] == "ok"
    assert health["components"]["consumer"]["detail"]["group_id"] == service.group_id
    assert health["components"]["broker"]["status"] == "ok"


async def test_events_delivered_twice_are_stored_once(service, producer, kafka_bootstrap):
    execution_id = unique("run-twice")
    events = a_run(execution_id, logs=20, artifacts=4)
    written = await produce(producer, events)
    written |= await produce(producer, events)  # the same bytes again: a redelivery
    await wait_committed(kafka_bootstrap, service.group_id, written)
    assert await counts(service.database_url, execution_id) == expected_counts(events)
    listed = (await service.client.get("/api/artifacts/", params={"execution_id": execution_id})).json()
    assert listed["total"] == 4


MALFORMED = {
    topics.RUNS_REQUESTED: b"this is not JSON",
    topics.RUNS_EVENTS: json.dumps({"event_type": "step.started", "workflow_id": WF, "execution_id": "x"}).encode(),
    topics.ARTIFACTS: json.dumps(
        {"event_type": "artifact.created", "workflow_id": WF, "execution_id": "x", "name": "n", "kind": "dataset"}
    ).encode(),
    # The old system's failure: fields double-encoded as a string.
    topics.LOGS: json.dumps(
        {"event_type": "log.record", "workflow_id": WF, "execution_id": "x", "message": "m", "fields": '{"a": 1}'}
    ).encode(),
}
REASONS = {
    topics.RUNS_REQUESTED: "not valid UTF-8 JSON",
    topics.RUNS_EVENTS: "without step_name",
    topics.ARTIFACTS: "inline payload or a uri",
    topics.LOGS: "fields",
}


async def read_dead_letters(bootstrap: str, keys: set[str], timeout: float = 60.0) -> dict[str, DeadLetter]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, DeadLetter] = {}
    try:
        await consumer.topics()
        partitions = [TopicPartition(topics.DEADLETTER, p) for p in consumer.partitions_for_topic(topics.DEADLETTER)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while keys - found.keys() and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    letter = DeadLetter.model_validate_json(record.value)
                    if letter.source_key in keys:
                        found[letter.source_key] = letter
    finally:
        await consumer.stop()
    return found


async def test_a_malformed_message_on_each_topic_is_dead_lettered_and_the_next_good_one_stored(
    service, producer, kafka_bootstrap
):
    keys, good = {}, {}
    for topic, value in MALFORMED.items():
        key = unique("bad")
        keys[key] = topic
        execution_id = key  # same key, same partition: the good one comes right after the bad one
        await producer.send_and_wait(topic, value, key=key.encode())
        ids = {"workflow_id": WF, "execution_id": execution_id}
        event = {
            topics.RUNS_REQUESTED: RunRequested(**ids, trigger="manual"),
            topics.RUNS_EVENTS: StepStarted(**ids, step_name="fetch_market_data"),
            topics.ARTIFACTS: ArtifactCreated(**ids, name="good", kind="dataset", payload={"ok": True}),
            topics.LOGS: LogRecorded(**ids, message="good", fields={"a": 1}),
        }[topic]
        good[execution_id] = event
        await producer.send_and_wait(topic, event.to_bytes(), key=event.key)

    for execution_id in good:

        async def stored(execution_id=execution_id):
            return (await service.client.get(f"/api/runs/{execution_id}")).status_code == 200

        await wait_until(stored, what=f"the good event after the bad one ({execution_id})")
    logs_run = next(e for e in good.values() if isinstance(e, LogRecorded)).execution_id
    assert (await service.client.get(f"/api/runs/{logs_run}/logs")).json()["logs"][0]["fields"] == {"a": 1}

    letters = await read_dead_letters(kafka_bootstrap, set(keys))
    assert set(letters) == set(keys)
    for key, letter in letters.items():
        topic = keys[key]
        assert letter.source_topic == topic
        assert letter.consumer == "artifacts"
        assert REASONS[topic] in letter.reason
        assert letter.original_value.encode() == MALFORMED[topic]
        assert letter.source_offset is not None


KILLED_CONSUMER = """
import asyncio, os, signal, sys
from services.artifacts.database import new_engine, new_sessionmaker
from services.artifacts.ingest.consumer import BatchConsumer
from shared import topics
from shared.database import normalize_database_url
from shared.kafka import new_broker
from shared.settings import KafkaSettings

database_url, group_id, marker = sys.argv[1:4]

async def kill_when_marker_is_stored(batch):
    # Called after the database commit, before the offset commit: die right there.
    if any(r.key == marker.encode() for records in batch.values() for r in records):
        print("killing after the database commit", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

async def main():
    settings = KafkaSettings()
    broker = new_broker(settings, client_id="killed-consumer")
    await broker.start()
    engine = new_engine(normalize_database_url(database_url))
    consumer = BatchConsumer(
        kafka=settings, session_factory=new_sessionmaker(engine), group_id=group_id, max_records=500,
        publish_dead_letter=lambda letter, key: broker.publish(letter.to_bytes(), topic=topics.DEADLETTER, key=key),
        after_store=kill_when_marker_is_stored,
    )
    await consumer.start()
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_a_consumer_killed_between_write_and_commit_loses_and_doubles_nothing(
    new_database, kafka_env, kafka_bootstrap, producer
):
    url = new_database()
    await migrate(url)
    await ensure_topics(kafka_settings(kafka_env))
    group_id = unique("ibflow-artifacts-killed")
    execution_id = unique("run-killed")
    events = a_run(execution_id, logs=30, artifacts=3)
    written = await produce(producer, events)

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLED_CONSUMER,
        url,
        group_id,
        execution_id,
        cwd=REPO,
        env=os.environ | kafka_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == -signal.SIGKILL, output.decode()[-3000:]
    assert b"killing after the database commit" in output

    # Written, not committed: the database has the run, the group's offsets are behind it.
    stored_before_restart = await counts(url, execution_id)
    assert stored_before_restart["run_events"] + stored_before_restart["logs"] + stored_before_restart["artifacts"] > 0
    behind = await committed_offsets(kafka_bootstrap, group_id, written)
    assert any(behind[tp] <= last for tp, last in written.items())

    # More of the run arrives while the consumer is dead, then it restarts.
    later = [LogRecorded(workflow_id=WF, execution_id=execution_id, message="after the crash", fields={"late": True})]
    written |= await produce(producer, later)
    engine = new_engine(normalize_database_url(url))
    broker = new_broker(kafka_settings(kafka_env), client_id="restarted-consumer")
    await broker.start()
    restarted = BatchConsumer(
        kafka=kafka_settings(kafka_env),
        session_factory=new_sessionmaker(engine),
        group_id=group_id,
        publish_dead_letter=lambda letter, key: broker.publish(letter.to_bytes(), topic=topics.DEADLETTER, key=key),
    )
    await restarted.start()
    try:
        await wait_committed(kafka_bootstrap, group_id, written, timeout=90)
    finally:
        await restarted.stop()
        await broker.stop()
        await engine.dispose()
    assert await counts(url, execution_id) == expected_counts(events + later)
    assert restarted.stats.duplicates > 0  # the batch stored before the kill came again


class FlakyDatabase:
    """A session factory whose database is unreachable until the test brings it back, so the
    outage lasts as long as the test needs however slowly the machine runs."""

    def __init__(self, sessions):
        self.sessions = sessions
        self.down = True
        self.refused = 0

    def __call__(self):
        if self.down:
            self.refused += 1
            raise ConnectionRefusedError("connection refused (simulated outage)")
        return self.sessions()


async def test_while_the_database_is_down_nothing_is_committed_and_nothing_dropped(
    new_database, kafka_env, kafka_bootstrap, producer
):
    url = new_database()
    await migrate(url)
    group_id = unique("ibflow-artifacts-outage")
    execution_id = unique("run-outage")
    events = a_run(execution_id, logs=10, artifacts=2)
    written = await produce(producer, events)
    engine = new_engine(normalize_database_url(url))
    flaky = FlakyDatabase(new_sessionmaker(engine))
    dead_letters = []

    async def collect(letter, key):
        dead_letters.append(letter)

    consumer = BatchConsumer(
        kafka=kafka_settings(kafka_env),
        session_factory=flaky,
        group_id=group_id,
        publish_dead_letter=collect,
        db_retry_seconds=0.5,
    )
    await consumer.start()
    try:

        async def retried_during_the_outage():
            return flaky.refused >= 2

        await wait_until(retried_during_the_outage, what="the consumer to hit the outage and retry")
        behind = await committed_offsets(kafka_bootstrap, group_id, written)
        assert all(behind[tp] <= last for tp, last in written.items())
        flaky.down = False
        await wait_committed(kafka_bootstrap, group_id, written, timeout=90)
    finally:
        await consumer.stop()
        await engine.dispose()
    assert flaky.refused >= 2
    assert "simulated outage" in consumer.stats.last_error
    assert await counts(url, execution_id) == expected_counts(events)
    assert consumer.stats.batches >= 1
    assert not [d for d in dead_letters if d.source_key == execution_id]


async def test_an_event_holding_a_nul_is_dead_lettered_alone_between_stored_neighbours(service, producer,
                                                                                      kafka_bootstrap):
    execution_id = unique("run-nul")
    ids = {"workflow_id": WF, "execution_id": execution_id}
    # an outside producer can send what ibflow's own producers refuse to build
    nul = LogRecorded(**ids, message="placeholder", fields={"n": 2}).model_dump(mode="json")
    nul["message"] = "a NUL \x00 PostgreSQL cannot store in text"
    events = [
        LogRecorded(**ids, message="before", fields={"n": 1}).to_bytes(),
        json.dumps(nul).encode(),
        LogRecorded(**ids, message="after", fields={"n": 3}).to_bytes(),
    ]
    for value in events:
        await producer.send_and_wait(topics.LOGS, value, key=execution_id.encode())
    letter = (await read_dead_letters(kafka_bootstrap, {execution_id}))[execution_id]
    assert "NUL" in letter.reason
    assert json.loads(letter.original_value)["fields"] == {"n": 2}

    async def neighbours_stored():
        response = await service.client.get(f"/api/runs/{execution_id}/logs")
        return response.status_code == 200 and len(response.json()["logs"]) == 2

    await wait_until(neighbours_stored, what="the events around the NUL")
    logs = (await service.client.get(f"/api/runs/{execution_id}/logs")).json()["logs"]
    assert [r["message"] for r in logs] == ["before", "after"]


async def test_without_a_broker_the_api_still_serves_and_health_says_why(new_database, kafka_env):
    url = new_database()
    await migrate(url)
    settings = ArtifactsSettings(
        database_url=url,
        **({key.lower(): value for key, value in kafka_env.items()} | {"kafka_bootstrap_servers": "127.0.0.1:1"}),
    )
    app = create_app(settings)
    # its start-up waits for the broker as long as the lifespan lasts
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://artifacts") as client:

            async def served():
                response = await client.get("/api/runs")
                return response.status_code == 200 and response

            assert (await wait_until(served, what="the API to serve stored runs")).json()["total"] == 0

            async def reported():
                report = (await client.get("/health")).json()
                return report["components"]["startup"]["detail"]["last_error"] and report

            report = await wait_until(reported, what="health to report why the consumer is not up")
            assert report["status"] == "starting"
            startup = report["components"]["startup"]
            assert startup["status"] == "starting"
            assert startup["detail"]["reason"] == "waiting for the broker at 127.0.0.1:1"
            assert "KafkaConnectionError" in startup["detail"]["last_error"]
