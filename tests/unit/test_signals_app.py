"""The RunRequested consumer wired as in `create_app`, on FastStream's in-memory broker."""

import json
import uuid

import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from services.signals.health import market_data_health
from services.signals.main import create_app, max_poll_interval_ms
from services.signals.market_data.models import ProviderHealth
from services.signals.settings import SignalsSettings
from shared import topics
from shared.events import RunRequested, decode_event

pytestmark = pytest.mark.unit

WORKFLOW_ID = "ibkr_trading_signal_workflow"


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> SignalsSettings:
    return SignalsSettings(
        _env_file=None,
        market_data_provider="sample_file",
        artifact_store_url=tmp_path_factory.mktemp("store").as_uri(),
        artifacts_url="http://127.0.0.1:9",
        artifacts_timeout_seconds=0.5,
        kafka_bootstrap_servers="127.0.0.1:9",
    )


@pytest.fixture(scope="module")
async def wired(settings):
    """The app's broker in memory, with listeners on every topic the service writes."""
    app = create_app(settings)
    broker = app.state.broker
    received: dict[str, list[bytes]] = {t: [] for t in topics.ALL_TOPICS}

    for topic in (topics.RUNS_EVENTS, topics.ARTIFACTS, topics.LOGS, topics.SIGNALS, topics.DEADLETTER):

        @broker.subscriber(topic, group_id=f"test-{topic}")
        async def collect(message: KafkaMessage) -> None:
            received[message.raw_message.topic].append(message.body)

    await app.state.provider.start()
    async with TestKafkaBroker(broker) as test_broker:
        yield test_broker, received


def of_execution(received, topic, execution_id) -> list:
    events = [decode_event(raw) for raw in received[topic]]
    return [e for e in events if e.execution_id == execution_id]


async def test_a_run_request_runs_the_workflow_and_publishes_to_every_topic(wired):
    broker, received = wired
    execution_id = f"exec-{uuid.uuid4().hex[:8]}"
    request = RunRequested(workflow_id=WORKFLOW_ID, execution_id=execution_id, trigger="manual",
                           params={"symbols": ["IBM"]})
    await broker.publish(request.to_bytes(), topic=topics.RUNS_REQUESTED, key=request.key)

    lifecycle = [e.event_type for e in of_execution(received, topics.RUNS_EVENTS, execution_id)]
    assert lifecycle[0] == "run.started" and lifecycle[-1] == "run.succeeded"
    assert lifecycle.count("step.succeeded") == 4
    assert [e.symbol for e in of_execution(received, topics.SIGNALS, execution_id)] == ["IBM"]
    assert len(of_execution(received, topics.ARTIFACTS, execution_id)) >= 4
    assert of_execution(received, topics.LOGS, execution_id)


async def test_an_invalid_request_is_dead_lettered_with_the_reason(wired):
    broker, received = wired
    before = len(received[topics.DEADLETTER])
    await broker.publish(b'{"event_type": "run.requested", "workflow_id": "w"}', topic=topics.RUNS_REQUESTED,
                         key=b"bad-key")
    letters = [json.loads(raw) for raw in received[topics.DEADLETTER][before:]]
    assert len(letters) == 1
    letter = letters[0]
    assert letter["consumer"] == "signals" and letter["source_topic"] == topics.RUNS_REQUESTED
    assert letter["source_key"] == "bad-key"
    assert "execution_id" in letter["reason"] and "trigger" in letter["reason"]
    assert letter["original_value"] == '{"event_type": "run.requested", "workflow_id": "w"}'


async def test_a_request_for_an_unknown_workflow_fails_the_run(wired):
    broker, received = wired
    execution_id = f"exec-{uuid.uuid4().hex[:8]}"
    request = RunRequested(workflow_id="some_other_workflow", execution_id=execution_id, trigger="schedule")
    await broker.publish(request.to_bytes(), topic=topics.RUNS_REQUESTED, key=request.key)
    (failed,) = of_execution(received, topics.RUNS_EVENTS, execution_id)
    assert failed.event_type == "run.failed" and "some_other_workflow" in failed.error


def test_a_run_may_take_all_its_step_timeouts_between_two_polls(settings):
    assert max_poll_interval_ms(settings) == (4 * 120 + 60) * 1000


@pytest.mark.parametrize(
    ("state", "status"),
    [("connected", "ok"), ("disabled", "ok"), ("disconnected", "degraded"), ("unauthorized", "degraded")],
)
def test_market_data_trouble_is_degraded_never_unhealthy(state, status):
    class Provider:
        name = "ibkr"

        def health(self):
            return ProviderHealth(state, {"host": "127.0.0.1"})

    component = market_data_health(Provider())
    assert component.status == status
    assert component.detail == {"provider": "ibkr", "host": "127.0.0.1", "state": state}
    assert (component.error is None) == (status == "ok")


def test_watchlist_is_validated_and_normalized():
    assert SignalsSettings(_env_file=None, watchlist=" aapl, MSFT ,aapl").watchlist_symbols == ("AAPL", "MSFT")
    with pytest.raises(ValueError, match="at least one symbol"):
        SignalsSettings(_env_file=None, watchlist=" , ")
    with pytest.raises(ValueError, match="not tickers"):
        SignalsSettings(_env_file=None, watchlist="AAPL,not a symbol")
