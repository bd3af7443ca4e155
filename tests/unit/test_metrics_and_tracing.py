"""The shared metrics and tracing plumbing, and the dashboard built on the metric names."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import services.artifacts.metrics
import services.scheduler.metrics
import services.signals.metrics  # noqa: F401  (registers the signals service's metrics)
from shared import tracing
from shared.json_logging import configure_logging
from shared.metrics import install_metrics

pytestmark = pytest.mark.unit

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "ibflow.json"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def small_app() -> FastAPI:
    app = FastAPI()

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict:
        return tracing.current_ids()

    install_metrics(app)
    tracing.install_tracing(app, "test")
    return app


async def get(app: FastAPI, path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get(path, **kwargs)


def request_series(text: str) -> set[tuple]:
    return {tuple(sorted(sample.labels.items()))
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == "ibflow_http_request_duration_seconds_count"}


async def test_requests_are_timed_by_route_template_and_random_paths_are_one_series():
    app = small_app()
    await get(app, "/things/a1")
    await get(app, "/things/b2")
    await get(app, "/metrics")  # a scrape is a request too: its own series first
    before = request_series((await get(app, "/metrics")).text)
    assert (("method", "GET"), ("route", "/things/{thing_id}"), ("status", "200")) in before
    for _ in range(50):
        await get(app, f"/{secrets.token_hex(5)}/{secrets.token_hex(3)}")
    added = request_series((await get(app, "/metrics")).text) - before
    assert added <= {(("method", "GET"), ("route", "unmatched"), ("status", "404"))}


async def test_a_requests_traceparent_is_the_parent_of_its_span():
    ids = (await get(small_app(), "/things/x", headers={"traceparent": TRACEPARENT})).json()
    assert ids["trace_id"] == TRACE_ID
    assert re.fullmatch(r"[0-9a-f]{16}", ids["span_id"]) and ids["span_id"] != "b7ad6b7169203331"


async def test_a_request_without_one_starts_a_trace():
    ids = (await get(small_app(), "/things/x", headers={"traceparent": "garbage"})).json()
    assert re.fullmatch(r"[0-9a-f]{32}", ids["trace_id"])


def test_a_kafka_headers_context_round_trips():
    tracing.configure_tracing("test")
    parent = tracing.context_from_headers([("traceparent", TRACEPARENT.encode())])
    with tracing.span("child", parent=parent):
        headers = tracing.kafka_headers()
        assert tracing.trace_id_of(headers["traceparent"]) == TRACE_ID
    assert tracing.trace_id_in([("other", b"x"), ("traceparent", TRACEPARENT.encode())]) == TRACE_ID


@pytest.mark.parametrize("value", [
    None, "", "garbage", f"00-{'0' * 32}-b7ad6b7169203331-01", f"00-{TRACE_ID}-{'0' * 16}-01",
    f"00-{TRACE_ID.upper()}-b7ad6b7169203331-01",
])
def test_a_malformed_traceparent_names_no_trace(value):
    assert tracing.trace_id_of(value) is None


@pytest.fixture
def json_log_lines():
    """The JSON log lines written while the test runs (the root logger restored after)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("test")
    stream = io.StringIO()
    root.handlers[0].setStream(stream)
    yield lambda: stream.getvalue().splitlines()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_log_line_written_in_a_span_carries_its_ids(json_log_lines):
    with tracing.span("work", parent=tracing.context_from_headers({"traceparent": TRACEPARENT})):
        logging.getLogger("test").warning("inside")
    logging.getLogger("test").warning("outside")
    inside, outside = (json.loads(line) for line in json_log_lines())
    assert inside["trace_id"] == TRACE_ID and len(inside["span_id"]) == 16
    assert "trace_id" not in outside


def test_child_spans_start_no_trace_of_their_own():
    tracing.configure_tracing("test")
    with tracing.child_span("step") as span:
        assert span is None and tracing.current_ids() == {}


def registered_sample_names() -> set[str]:
    """Every sample name the services' metrics can produce, with or without values yet."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def test_every_dashboard_expression_names_metrics_the_services_have():
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    assert expressions
    known = registered_sample_names()
    used = {name for expr in expressions for name in re.findall(r"\bibflow_[a-z_]+\b", expr)}
    assert used and used <= known, sorted(used - known)


EXPORT_SCRIPT = """
import threading
from opentelemetry import trace
from shared import tracing
before = threading.active_count()
tracing.configure_tracing("exporter-test")
with tracing.span("work"):
    pass
print("threads", threading.active_count() - before, flush=True)
trace.get_tracer_provider().shutdown()
"""


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that records the paths of what it receives."""

    received: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Collector.received.append(self.path)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def new_threads(endpoint: str | None) -> int:
    """Threads a process started for tracing, with or without an OTLP endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    result = subprocess.run([sys.executable, "-c", EXPORT_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


def test_spans_are_exported_with_otlp_only_when_an_endpoint_is_set():
    server = HTTPServer(("127.0.0.1", 0), Collector)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        assert new_threads(None) == 0  # no exporter, no background thread
        assert Collector.received == []
        assert new_threads(f"http://127.0.0.1:{server.server_port}") >= 1
        assert Collector.received == ["/v1/traces"]
    finally:
        server.shutdown()
