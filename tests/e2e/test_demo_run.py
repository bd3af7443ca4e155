"""The walking skeleton end to end: a trigger through the gateway becomes a stored run.

The stack is the one `make run` starts: the demo run's market data comes through the
real ib_async client from the fake IB gateway.
"""

import asyncio
import csv
import gzip
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from aiokafka import AIOKafkaProducer

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
def demo_artifacts(gateway, demo_run) -> list[dict]:
    params = {"execution_id": demo_run["execution_id"], "limit": 500}
    return httpx.get(f"{gateway}/api/artifacts/", params=params).json()["artifacts"]


@pytest.fixture(scope="module")
def demo_run(gateway) -> dict:
    response = httpx.post(f"{gateway}/api/workflows/{WORKFLOW}/runs", json={}, timeout=10)
    assert response.status_code == 202, response.text
    return wait_for_run(gateway, response.json()["execution_id"])


def test_the_run_succeeds_with_its_four_steps(demo_run):
    assert demo_run["status"] == "succeeded", demo_run
    assert [step["step_name"] for step in demo_run["steps"]] == STEPS
    assert all(step["status"] == "succeeded" for step in demo_run["steps"])
    assert all(step["started_at"] and step["finished_at"] for step in demo_run["steps"])


def test_every_step_left_artifacts_that_name_their_run(gateway, demo_run):
    execution_id = demo_run["execution_id"]
    body = httpx.get(f"{gateway}/api/artifacts/", params={"execution_id": execution_id, "limit": 500}).json()
    assert body["total"] >= 4
    for artifact in body["artifacts"]:
        assert (artifact["workflow_id"], artifact["execution_id"]) == (WORKFLOW, execution_id)
        assert artifact["step_name"] in STEPS
    assert {a["step_name"] for a in body["artifacts"]} == set(STEPS)


def test_the_runs_logs_are_readable_records(gateway, demo_run):
    logs = httpx.get(f"{gateway}/api/runs/{demo_run['execution_id']}/logs").json()["logs"]
    assert logs, "a run leaves log records"
    for record in logs:
        assert isinstance(record["message"], str) and isinstance(record["fields"], dict)


def test_a_manual_trigger_with_symbols_scores_only_those(gateway):
    response = httpx.post(f"{gateway}/api/workflows/{WORKFLOW}/runs", json={"params": {"symbols": ["IBM"]}})
    assert response.status_code == 202
    run = wait_for_run(gateway, response.json()["execution_id"])
    assert run["status"] == "succeeded", run
    signals = httpx.get(f"{gateway}/api/artifacts/", params={"execution_id": run["execution_id"], "kind": "signals"}).json()
    artifact = httpx.get(f"{gateway}/api/artifacts/{signals['artifacts'][0]['artifact_id']}").json()
    assert [s["symbol"] for s in artifact["payload"]["signals"]] == ["IBM"]


def test_bad_trigger_input_is_a_4xx_with_a_message(gateway):
    response = httpx.post(f"{gateway}/api/workflows/{WORKFLOW}/runs", json={"params": {"symbols": ["not a symbol"]}})
    assert response.status_code == 422 and "symbols" in response.json()["error"]
    response = httpx.post(f"{gateway}/api/workflows/no_such_workflow/runs", json={})
    assert response.status_code == 404 and response.json()["error"]


def test_health_is_ok_when_everything_runs(gateway, demo_run):
    health = httpx.get(f"{gateway}/health").json()
    assert health["status"] in {"ok", "degraded"}, health
    database = health["components"]["database"]
    assert database["status"] == "ok" and database["detail"]["database"] == "ibflow"
    for service in ("artifacts", "scheduler"):
        schema = database["detail"]["services"][service]
        assert schema["revision"] == schema["head"] is not None


def sample_bars() -> dict[tuple[str, str], list[float]]:
    import bokeh_sampledata

    path = Path(bokeh_sampledata.__file__).parent / "_data" / "stocks.csv.gz"
    with gzip.open(path, "rt") as rows:
        return {(r["Ticker"], r["Date"]): [float(r[k]) for k in ("Open", "High", "Low", "Close", "Volume")]
                for r in csv.DictReader(rows)}


def test_the_dataset_came_through_ibkr_and_equals_the_sample_data(gateway, demo_artifacts):
    dataset = next(a for a in demo_artifacts if a["kind"] == "dataset" and a["media_type"] == "text/csv")
    assert "IBKR" in dataset["metadata"]["source"] and dataset["metadata"]["replayed"] is True
    rows = list(csv.DictReader(httpx.get(f"{gateway}{dataset['content_url']}").text.splitlines()))
    expected = sample_bars()
    assert len(rows) > 400
    for row in rows:
        stored = [float(row[k]) for k in ("open", "high", "low", "close", "volume")]
        assert stored == expected[(row["symbol"], row["date"])], row


def test_the_demo_run_leaves_every_kind_a_reader_needs(gateway, demo_artifacts):
    kinds = {a["kind"] for a in demo_artifacts}
    assert {"dataset", "features", "model", "signals", "chart", "report"} <= kinds
    assert any(a["kind"] == "model" and a["media_type"] == "application/octet-stream" for a in demo_artifacts)
    charts = [a for a in demo_artifacts if a["kind"] == "chart"]
    assert len(charts) == 4  # one per watchlist symbol
    for chart in charts:  # drawn as SVG from the chart's data
        assert chart["media_type"] == "image/svg+xml"
        content = httpx.get(f"{gateway}{chart['content_url']}").content
        assert content.startswith(b"<svg ") and content.rstrip().endswith(b"</svg>")


def test_stored_content_downloads_with_its_recorded_hash(gateway, demo_artifacts):
    stored = [a for a in demo_artifacts if a["uri"]]
    assert stored
    for artifact in stored:
        response = httpx.get(f"{gateway}{artifact['content_url']}")
        assert response.status_code == 200
        assert response.headers["content-type"].split(";")[0] == artifact["media_type"]
        assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
        assert len(response.content) == artifact["size_bytes"]


def test_a_tampered_blob_is_refused(stack, gateway, demo_artifacts):
    report = next(a for a in demo_artifacts if a["kind"] == "report")
    blob = Path(urlparse(report["uri"]).path)
    original = blob.read_bytes()
    blob.write_bytes(original + b"tampered")
    try:
        response = httpx.get(f"{gateway}{report['content_url']}")
        assert response.status_code == 409 and "sha256" in response.text.lower()
    finally:
        blob.write_bytes(original)


@pytest.mark.parametrize("trick", ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "%2E%2E", "not-a-uuid"])
def test_path_tricks_in_identifiers_are_a_4xx(gateway, trick):
    for path in (f"/api/artifacts/{trick}", f"/api/artifacts/{trick}/content", f"/api/runs/{trick}"):
        assert 400 <= httpx.get(f"{gateway}{path}").status_code < 500, path


def test_an_artifact_from_a_plain_kafka_producer_shows_up(stack, gateway):
    """The README's contract for producers outside ibflow (an Airflow DAG, a notebook)."""
    execution_id = f"airflow-dag-{uuid.uuid4().hex[:8]}"
    event = {
        "event_id": str(uuid.uuid4()), "event_type": "artifact.created", "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(), "workflow_id": "nightly_dag",
        "execution_id": execution_id, "step_name": "train", "artifact_id": str(uuid.uuid4()),
        "name": "validation metrics", "kind": "metrics", "media_type": "application/json",
        "payload": {"auc": 0.71}, "metadata": {}, "dag_id": "nightly_dag", "task_id": "train",
    }

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"])
        await producer.start()
        try:
            await producer.send_and_wait("ibflow.artifacts", json.dumps(event).encode(), key=execution_id.encode())
        finally:
            await producer.stop()

    asyncio.run(publish())
    for _ in range(60):
        found = httpx.get(f"{gateway}/api/artifacts/", params={"dag_id": "nightly_dag"}).json()
        if found["total"]:
            break
        time.sleep(0.5)
    assert [(a["execution_id"], a["task_id"], a["name"]) for a in found["artifacts"]] == [
        (execution_id, "train", "validation metrics")
    ]
