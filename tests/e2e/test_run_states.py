"""Run states on a real stack: a run of one unknown and one known symbol is partial with
the unknown one's reason everywhere, and an outside producer's artifact makes an
external run, never an eternal `running`."""

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.support import wait_for_run

pytestmark = pytest.mark.e2e
WORKFLOW = "ibkr_trading_signal_workflow"
STEPS = ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack()


@pytest.fixture(scope="module")
def gateway(stack) -> str:
    return stack.gateway_url


@pytest.fixture(scope="module")
def partial_run(gateway) -> dict:
    """TSLA is unknown to the fake IB gateway (error 200), AAPL is in its sample data."""
    response = httpx.post(f"{gateway}/api/workflows/{WORKFLOW}/runs",
                          json={"params": {"symbols": ["TSLA", "AAPL"]}}, timeout=10)
    assert response.status_code == 202, response.text
    return wait_for_run(gateway, response.json()["execution_id"], timeout=180)


def assert_tsla_failed(failed_items: list[dict]) -> None:
    [item] = failed_items
    assert (item["item"], item["step"], item["code"]) == ("TSLA", "fetch_market_data", 200), item
    assert item["reason"].startswith("no security definition"), item
    assert "(code 200)" in item["reason"]


def test_a_run_with_an_unknown_symbol_is_partial_with_its_reason_in_the_detail(partial_run):
    assert partial_run["status"] == "partial", partial_run
    assert_tsla_failed(partial_run["failed_items"])
    assert [(s["step_name"], s["status"]) for s in partial_run["steps"]] == [(s, "succeeded") for s in STEPS]
    assert partial_run["error"] is None and partial_run["finished_at"]


def test_the_runs_list_says_partial_with_the_reason(gateway, partial_run):
    runs = httpx.get(f"{gateway}/api/runs", params={"status": "partial", "limit": 500}).json()["runs"]
    [listed] = [r for r in runs if r["execution_id"] == partial_run["execution_id"]]
    assert listed["status"] == "partial"
    assert_tsla_failed(listed["failed_items"])
    succeeded = httpx.get(f"{gateway}/api/runs", params={"status": "succeeded", "limit": 500}).json()["runs"]
    assert partial_run["execution_id"] not in {r["execution_id"] for r in succeeded}


def test_the_run_page_and_the_list_page_show_the_failed_symbol(gateway, partial_run):
    page = httpx.get(f"{gateway}/runs/{partial_run['execution_id']}").text
    assert 'data-status="partial"' in page and 'id="failed-items"' in page
    assert "<strong>TSLA</strong> in fetch_market_data: no security definition" in page
    listing = httpx.get(f"{gateway}/runs").text
    row = listing[listing.index(f'data-execution="{partial_run["execution_id"]}"'):]
    row = row[:row.index("</tr>")]
    assert 'status-partial"' in row and "<strong>TSLA</strong> failed: no security definition" in row


def test_the_runs_events_say_partial_and_its_logs_say_why(stack, gateway, partial_run):
    execution_id = partial_run["execution_id"]
    events = asyncio.run(lifecycle_events(stack.env["KAFKA_BOOTSTRAP_SERVERS"], execution_id))
    assert events[-1]["event_type"] == "run.partial", [e["event_type"] for e in events]
    assert "run.succeeded" not in {e["event_type"] for e in events}
    assert_tsla_failed(events[-1]["failed_items"])
    logs = httpx.get(f"{gateway}/api/runs/{execution_id}/logs", params={"level": "WARNING"}).json()["logs"]
    assert any(r["message"].startswith("run partial: 1 failed item: TSLA (fetch_market_data)") for r in logs), logs


async def lifecycle_events(bootstrap: str, execution_id: str, timeout: float = 60) -> list[dict]:
    """The run's events on ibflow.runs.events, read from the beginning up to its outcome."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition("ibflow.runs.events", p)
                      for p in consumer.partitions_for_topic("ibflow.runs.events") or ()]
        if not partitions:
            await consumer.force_metadata_update()
            partitions = [TopicPartition("ibflow.runs.events", p)
                          for p in consumer.partitions_for_topic("ibflow.runs.events")]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[dict] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.key == execution_id.encode():
                        found.append(json.loads(record.value))
            if any(e["event_type"] in {"run.succeeded", "run.partial", "run.failed"} for e in found):
                return found
        raise AssertionError(f"no outcome event of {execution_id} within {timeout}s; saw {found}")
    finally:
        await consumer.stop()


def test_an_outside_producers_artifact_makes_an_external_run_not_a_running_one(stack, gateway):
    execution_id = f"my_dag__{uuid.uuid4().hex[:8]}"
    event = {
        "event_id": str(uuid.uuid4()), "event_type": "artifact.created", "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "workflow_id": "my_dag", "execution_id": execution_id, "step_name": "train",
        "artifact_id": str(uuid.uuid4()), "name": "validation metrics", "kind": "metrics",
        "media_type": "application/json", "payload": {"auc": 0.71}, "metadata": {},
        "dag_id": "my_dag", "task_id": "train",
    }

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"])
        await producer.start()
        try:
            await producer.send_and_wait("ibflow.artifacts", json.dumps(event).encode(), key=execution_id.encode())
        finally:
            await producer.stop()

    asyncio.run(publish())
    run = None
    for _ in range(120):
        response = httpx.get(f"{gateway}/api/runs/{execution_id}")
        if response.status_code == 200:
            run = response.json()
            break
        time.sleep(0.5)
    assert run is not None, f"no run {execution_id} within 60 s"
    assert run["status"] == "external", run
    assert run["artifact_count"] == 1
    assert [(s["step_name"], s["status"]) for s in run["steps"]] == [("train", "external")]
    running = httpx.get(f"{gateway}/api/runs", params={"status": "running", "limit": 500}).json()["runs"]
    assert execution_id not in {r["execution_id"] for r in running}
    external = httpx.get(f"{gateway}/api/runs", params={"status": "external", "limit": 500}).json()["runs"]
    assert execution_id in {r["execution_id"] for r in external}

    page = httpx.get(f"{gateway}/runs/{execution_id}").text
    assert 'data-status="external"' in page and 'data-live="false"' in page
    assert "watchlist" not in page and "Not run by ibflow" in page
    listing = httpx.get(f"{gateway}/runs").text
    row = listing[listing.index(f'data-execution="{execution_id}"'):]
    row = row[:row.index("</tr>")]
    assert 'status-external"' in row and " live" not in row
