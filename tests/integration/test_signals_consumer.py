"""The signals service's RunRequested consumer against the real broker.

The service runs in-process (its FastAPI lifespan starts the FastStream broker); the
test talks to it only through Kafka: it publishes run requests and reads what comes
out with a plain aiokafka consumer.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.signals.main import create_app
from services.signals.settings import SignalsSettings
from shared import topics
from shared.events import DeadLetter, RunParams, RunRequested, decode_event
from shared.kafka import ensure_topics
from shared.startup import running

pytestmark = pytest.mark.integration

WORKFLOW_ID = "ibkr_trading_signal_workflow"
STEPS = ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]
OUTPUT_TOPICS = [topics.RUNS_EVENTS, topics.ARTIFACTS, topics.LOGS, topics.SIGNALS, topics.DEADLETTER]
# An upper bound for "never arrives", not a speed requirement: a run takes a few seconds.
WAIT_SECONDS = 120


async def skip_earlier_requests(bootstrap: str, group_id: str) -> None:
    """Commit the new group at the end of `ibflow.runs.requested`, so the service under
    test runs only this module's requests, not those other test modules left on the
    shared broker (docs/broker-notes.md: end offsets are unreliable on tansu, so read to the end)."""
    consumer = AIOKafkaConsumer(
        topics.RUNS_REQUESTED,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=3000,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
        while await consumer.getmany(timeout_ms=1000):
            pass
        await consumer.commit()
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
async def service(kafka_env, kafka_bootstrap, tmp_path_factory):
    settings = SignalsSettings(
        _env_file=None,
        **{name.lower(): value for name, value in kafka_env.items()},
        signals_consumer_group_id=f"ibflow-signals-test-{uuid.uuid4().hex[:8]}",
        # the Kafka path is under test here; runs through IBKR are test_ibkr_runs_under_faults
        market_data_provider="sample_file",
        artifact_store_url=tmp_path_factory.mktemp("artifact-store").as_uri(),
        # nothing listens there: the report says there is no previous run
        artifacts_url="http://127.0.0.1:9",
        artifacts_timeout_seconds=1,
    )
    await ensure_topics(settings)
    await skip_earlier_requests(kafka_bootstrap, settings.signals_consumer_group_id)
    app = create_app(settings)
    async with running(app):
        yield app


@pytest.fixture(scope="module")
async def producer(kafka_bootstrap):
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture(scope="module")
async def outputs(kafka_bootstrap):
    """Everything the service publishes, read from the beginning, by execution id."""
    consumer = AIOKafkaConsumer(
        *OUTPUT_TOPICS, bootstrap_servers=kafka_bootstrap, group_id=None, auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    yield Outputs(consumer)
    await consumer.stop()


class Outputs:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.events: dict[str, list] = defaultdict(list)
        self.dead_letters: list[DeadLetter] = []

    async def _poll(self) -> None:
        batches = await self._consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for record in records:
                # Other test modules leave deliberately broken records on these topics.
                try:
                    if record.topic == topics.DEADLETTER:
                        self.dead_letters.append(DeadLetter.model_validate_json(record.value))
                    else:
                        event = decode_event(record.value)
                        self.events[event.execution_id].append((record.topic, event))
                except ValueError:
                    continue

    async def until_terminal(self, execution_id: str, *, extra=lambda events: True) -> list:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            await self._poll()
            events = [e for _, e in self.events[execution_id]]
            if any(e.event_type in {"run.succeeded", "run.failed"} for e in events) and extra(events):
                # logs and artifacts travel on other topics: give stragglers a moment
                await self._poll()
                return [e for _, e in self.events[execution_id]]
        raise AssertionError(f"run {execution_id} did not end; saw {[e.event_type for e in events]}")

    async def dead_letter_for(self, key: str) -> DeadLetter:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            await self._poll()
            for letter in self.dead_letters:
                if letter.source_key == key:
                    return letter
        raise AssertionError(f"no dead letter with key {key}")


def run_request(execution_id: str, symbols: list[str]) -> RunRequested:
    return RunRequested(
        workflow_id=WORKFLOW_ID, execution_id=execution_id, trigger="manual", params=RunParams(symbols=symbols)
    )


def signals_count(n: int):
    return lambda events: sum(e.event_type == "signal.generated" for e in events) >= n


@pytest.fixture(scope="module")
async def three_requests(service, producer, outputs):
    """A malformed request, a run that fails, and a good run, in that order on one partition."""
    key = f"exec-int-{uuid.uuid4().hex[:8]}"
    failing = run_request(f"{key}-failing", ["XYZ"])
    good = run_request(key, ["AAPL", "IBM"])
    await producer.send_and_wait(topics.RUNS_REQUESTED, b'{"event_type": "run.requested", "oops": true', key=key.encode())
    # same key, same partition: the good run is queued behind the bad message and the failed run
    await producer.send_and_wait(topics.RUNS_REQUESTED, failing.to_bytes(), key=key.encode())
    await producer.send_and_wait(topics.RUNS_REQUESTED, good.to_bytes(), key=key.encode())
    failed_events = await outputs.until_terminal(failing.execution_id)
    good_events = await outputs.until_terminal(good.execution_id, extra=signals_count(2))
    return {"key": key, "good": good, "good_events": good_events, "failed_events": failed_events}


async def test_a_malformed_request_is_dead_lettered(three_requests, outputs):
    letter = await outputs.dead_letter_for(three_requests["key"])
    assert letter.consumer == "signals" and letter.source_topic == topics.RUNS_REQUESTED
    assert letter.reason.startswith("not valid UTF-8 JSON")
    assert letter.original_value == '{"event_type": "run.requested", "oops": true'
    assert letter.source_offset is not None and letter.source_partition is not None


async def test_a_failing_run_is_published_as_failed_with_an_error_log(three_requests):
    events = three_requests["failed_events"]
    lifecycle = [(e.event_type, e.step_name) for e in events if e.topic == topics.RUNS_EVENTS]
    assert lifecycle == [
        ("run.started", None),
        ("step.started", "fetch_market_data"),
        ("step.failed", "fetch_market_data"),
        *[("step.skipped", step) for step in STEPS[1:]],
        ("run.failed", None),
    ]
    errors = [e for e in events if e.event_type == "log.record" and e.level == "ERROR"]
    assert errors and errors[0].step_name == "fetch_market_data"
    assert errors[0].fields["error_type"] == "NoMarketDataError"


async def test_the_next_good_request_runs_all_steps_in_order(three_requests):
    events = three_requests["good_events"]
    lifecycle = [(e.event_type, e.step_name) for e in events if e.topic == topics.RUNS_EVENTS]
    expected = [("run.started", None)]
    for step in STEPS:
        expected += [("step.started", step), ("step.succeeded", step)]
    assert lifecycle == expected + [("run.succeeded", None)]


async def test_every_step_has_artifacts_naming_workflow_execution_and_step(three_requests):
    good = three_requests["good"]
    artifacts = [e for e in three_requests["good_events"] if e.event_type == "artifact.created"]
    assert {a.step_name for a in artifacts} == set(STEPS)
    for artifact in artifacts:
        assert (artifact.workflow_id, artifact.execution_id) == (WORKFLOW_ID, good.execution_id)
        assert (artifact.payload is None) == (artifact.uri is not None)


async def test_one_signal_per_symbol_on_the_signals_topic(three_requests):
    signals = [e for e in three_requests["good_events"] if e.event_type == "signal.generated"]
    assert sorted(s.symbol for s in signals) == ["AAPL", "IBM"]
    assert all(s.action in {"BUY", "SELL", "HOLD"} and s.reasons for s in signals)


async def test_log_records_are_structured(three_requests):
    logs = [e for e in three_requests["good_events"] if e.event_type == "log.record"]
    assert {log.step_name for log in logs} >= set(STEPS)
    assert all(isinstance(log.fields, dict) for log in logs)


async def test_a_redelivered_request_emits_the_same_event_ids(three_requests, producer, outputs):
    good = three_requests["good"]
    first = {e.event_id for e in three_requests["good_events"]}
    before = len(outputs.events[good.execution_id])
    await producer.send_and_wait(topics.RUNS_REQUESTED, good.to_bytes(), key=good.key)

    def second_run_done(events):
        return sum(e.event_type == "run.succeeded" for e in events) == 2

    events = await outputs.until_terminal(good.execution_id, extra=second_run_done)
    again = events[before:]
    assert again and {e.event_id for e in again} <= first


async def test_health_shows_market_data_broker_and_store(service):
    transport = httpx.ASGITransport(app=service)
    async with httpx.AsyncClient(transport=transport, base_url="http://signals") as client:
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "signals" and body["status"] == "ok", body
    assert body["components"]["ibkr"]["detail"]["state"] == "disabled"
    assert body["components"]["ibkr"]["detail"]["provider"] == "sample_file"
    assert body["components"]["broker"]["status"] == "ok"
    assert body["components"]["artifact_store"]["detail"]["writable"] is True
