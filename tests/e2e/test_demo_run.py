"""The walking skeleton end to end: a trigger through the gateway becomes a stored run."""

import httpx
import pytest

from tests.support import wait_for_run

pytestmark = pytest.mark.e2e
WORKFLOW = "ibkr_trading_signal_workflow"
STEPS = ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]


@pytest.fixture(scope="module")
def gateway(start_stack) -> str:
    return start_stack().gateway_url


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
