"""Metrics and traces on a real stack: every service's `/metrics` is Prometheus text
with what a run did, and a trigger's `traceparent` reaches the stored run and its logs.

One module for both, so that they share one stack start.
"""

from __future__ import annotations

import json
import secrets
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import wait_for_run

pytestmark = pytest.mark.e2e
WORKFLOW = "ibkr_trading_signal_workflow"
SERVICES = ("gateway", "artifacts", "scheduler", "signals")
TRACE_ID = secrets.token_hex(16)
TRACEPARENT = f"00-{TRACE_ID}-{secrets.token_hex(8)}-01"


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack()


@pytest.fixture(scope="module")
def urls(stack) -> dict[str, str]:
    return {name: stack.env[f"{name.upper()}_URL"] for name in SERVICES}


@pytest.fixture(scope="module")
def traced_run(stack) -> dict:
    response = httpx.post(f"{stack.gateway_url}/api/workflows/{WORKFLOW}/runs", json={},
                          headers={"traceparent": TRACEPARENT}, timeout=10)
    assert response.status_code == 202, response.text
    return wait_for_run(stack.gateway_url, response.json()["execution_id"])


def samples(url: str) -> list:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def value(found: list, name: str, **labels: str) -> float:
    return sum(s.value for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for_sample(url: str, name: str, timeout: float = 30.0, **labels: str) -> list:
    """The scrape once `name` has a non-zero sample (the consumer may commit a moment
    after the run is readable)."""
    deadline = time.monotonic() + timeout
    while True:
        found = samples(url)
        if value(found, name, **labels) > 0 or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_every_service_serves_prometheus_text(urls, traced_run):
    for name, url in urls.items():
        found = samples(url)
        assert any(s.name.startswith("ibflow_http_request_duration_seconds") for s in found), name


def test_the_artifacts_service_counts_what_it_stored(urls, traced_run):
    found = wait_for_sample(urls["artifacts"], "ibflow_artifacts_events_stored_total")
    assert value(found, "ibflow_artifacts_events_stored_total", consumer="artifacts") > 0
    assert value(found, "ibflow_consumer_events_total", consumer="artifacts", topic="ibflow.logs",
                 outcome="handled") > 0
    assert value(found, "ibflow_artifacts_batch_size_records_count") > 0
    assert value(found, "ibflow_artifacts_runs", workflow=WORKFLOW, status="succeeded") >= 1
    assert value(found, "ibflow_db_pool_connections", state="idle") + value(
        found, "ibflow_db_pool_connections", state="in_use") >= 1


def test_the_signals_service_has_the_runs_duration(urls, traced_run):
    found = samples(urls["signals"])
    assert value(found, "ibflow_signals_run_duration_seconds_count", workflow=WORKFLOW, status="succeeded") >= 1
    assert value(found, "ibflow_signals_step_duration_seconds_count", workflow=WORKFLOW,
                 step="fetch_market_data", status="succeeded") >= 1
    assert value(found, "ibflow_consumer_events_total", consumer="signals", topic="ibflow.runs.requested",
                 outcome="handled") >= 1
    assert value(found, "ibflow_ibkr_connection_state", state="ready") == 1


def test_consumer_lag_is_what_each_client_knows_never_negative(urls, traced_run):
    for name, group in (("artifacts", "ibflow-artifacts"), ("signals", "ibflow-signals"),
                        ("scheduler", "ibflow-scheduler")):
        lags = [s for s in samples(urls[name]) if s.name == "ibflow_consumer_lag_records"]
        assert all(s.labels["group"] == group and s.labels["partition"].isdigit() and s.value >= 0
                   for s in lags), lags
        if name == "artifacts":  # it has fetched from every partition it holds by now
            assert {s.labels["topic"] for s in lags} == {"ibflow.runs.requested", "ibflow.runs.events",
                                                         "ibflow.artifacts", "ibflow.logs"}


def test_the_scheduler_counts_the_manual_trigger(urls, traced_run):
    found = samples(urls["scheduler"])
    assert value(found, "ibflow_scheduler_slots_total", workflow=WORKFLOW, trigger="manual", outcome="manual") >= 1


def test_the_gateway_does_not_forward_metrics(urls):
    found = samples(urls["gateway"])
    # the gateway's own series only: its routes, none of the services' metrics
    assert not any(s.name.startswith(("ibflow_artifacts_", "ibflow_signals_", "ibflow_scheduler_")) for s in found)
    assert httpx.get(f"{urls['gateway']}/api/metrics", timeout=10).status_code == 404


def test_random_paths_add_at_most_one_unmatched_series(urls):
    def series(found: list) -> set:
        return {tuple(sorted(s.labels.items())) for s in found
                if s.name == "ibflow_http_request_duration_seconds_count"}

    for name in ("gateway", "artifacts"):
        samples(urls[name])  # a scrape is a request too: its own series first
        before = series(samples(urls[name]))
        for _ in range(50):
            httpx.get(f"{urls[name]}/{secrets.token_hex(6)}/{secrets.token_hex(3)}", timeout=10)
        added = series(samples(urls[name])) - before
        assert len(added) <= 1, added
        assert all(dict(labels)["route"] == "unmatched" for labels in added), added


def test_the_triggers_trace_id_is_the_runs(traced_run):
    assert traced_run["trace_id"] == TRACE_ID


def test_the_runs_log_records_carry_the_trace(stack, traced_run):
    logs = httpx.get(f"{stack.gateway_url}/api/runs/{traced_run['execution_id']}/logs",
                     params={"limit": 500}, timeout=10).json()["logs"]
    assert logs
    for record in logs:
        assert record["fields"]["trace_id"] == TRACE_ID, record
        assert len(record["fields"]["span_id"]) == 16


def test_the_process_logs_carry_the_trace(stack, traced_run):
    lines = [_json(line) for line in stack.log_lines("signals")]
    traced = [line for line in lines if line.get("execution_id") == traced_run["execution_id"]]
    assert traced and all(line.get("trace_id") == TRACE_ID for line in traced), traced[:3]


def test_the_run_page_shows_the_trace_id(stack, traced_run):
    page = httpx.get(f"{stack.gateway_url}/runs/{traced_run['execution_id']}", timeout=10)
    assert page.status_code == 200 and TRACE_ID in page.text


def _json(line: str) -> dict:
    try:
        return json.loads(line)
    except ValueError:
        return {}
