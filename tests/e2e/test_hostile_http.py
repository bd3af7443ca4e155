"""The stack's one public surface tried as an attacker would with curl, on the default
configuration (no IBFLOW_API_TOKEN, as `make run` starts it): NUL bytes, extreme
datetimes, huge cursors, a 200 MB body, form-encoded and cross-site mutations, a wrong
Host: every one a JSON 4xx, the gateway's memory flat, and live log streams that leave
the rest of the API answering."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared import topics
from shared.events import ArtifactCreated, LogRecorded, RunStarted
from tests.support import json_value

pytestmark = pytest.mark.e2e

WORKFLOW = "ibkr_trading_signal_workflow"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack()


@pytest.fixture(scope="module")
def gateway(stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as client:
        yield client


def assert_json_4xx(response: httpx.Response, status: int | None = None) -> dict:
    assert 400 <= response.status_code < 500, (response.request.url, response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    body = response.json()
    assert body["status"] == response.status_code and body["error"]
    return body


# --- values the database cannot take ----------------------------------------------------


@pytest.mark.parametrize(("path", "params"), [
    ("/api/artifacts", {"kind": "signals\x00"}),
    ("/api/artifacts", {"workflow_id": "\x00"}),
    ("/api/artifacts/by-execution", {"step_name": "a\x00b"}),
    ("/api/runs", {"workflow_id": "wf\x00"}),
    ("/api/runs", {"trigger": "manual\x00"}),
    ("/api/runs", {"status": "running\x00"}),
    ("/api/runs/x/logs", {"q": "\x00"}),
    (f"/api/workflows/{WORKFLOW}/ledger", {"execution_id": "manual-\x00"}),
])
def test_nul_characters_in_filters(gateway, path, params):
    assert_json_4xx(gateway.get(path, params=params), 422)


@pytest.mark.parametrize("value", [
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0.5", "1700000000", "2026-13-01T00:00:00Z",
    "2026-01-01T00:00:00", "+275760-09-13T00:00:00Z",
])
@pytest.mark.parametrize(("path", "name"), [
    ("/api/artifacts", "created_after"), ("/api/artifacts", "created_before"),
    ("/api/runs", "started_after"), ("/api/runs", "started_before"),
])
def test_datetimes_postgresql_cannot_hold_or_that_are_not_rfc3339(gateway, path, name, value):
    assert_json_4xx(gateway.get(path, params={name: value}), 422)


@pytest.mark.parametrize("path", ["/api/artifacts", "/api/artifacts/by-execution", "/api/runs", "/api/runs/x/logs",
                                  f"/api/workflows/{WORKFLOW}/ledger"])
def test_huge_and_malformed_cursors(gateway, path):
    for cursor in ("A" * 10_000, "9" * 40, "r1~" + ".00" * 10, "'; DROP TABLE runs; --"):
        assert_json_4xx(gateway.get(path, params={"cursor": cursor}), 422)


@pytest.mark.parametrize(("path", "cursor"), [
    ("/api/artifacts", "a0~" + "0" * 32), ("/api/artifacts/by-execution", "e0~"), ("/api/runs", "r0~"),
    (f"/api/workflows/{WORKFLOW}/ledger", "0"), (f"/api/workflows/{WORKFLOW}/ledger", "9" * 19),
    ("/api/runs", "r" + "9" * 18 + "~" + "z" * 200),
])
def test_all_zero_and_extreme_but_well_formed_cursors_are_pages(gateway, path, cursor):
    assert gateway.get(path, params={"cursor": cursor}).status_code == 200


@pytest.mark.parametrize("body", [
    {"cron": "* " * 5000}, {"max_active_runs": 1e10}, {"max_active_runs": 10**10}, {"misfire_window_seconds": -1},
    {"paused": None}, {"timezone": "UTC\x00"}, {"calendar": "XNYS\x00"},
])
def test_schedule_values_beyond_what_the_database_holds(gateway, body):
    assert_json_4xx(gateway.patch(f"/api/workflows/{WORKFLOW}/schedule", json=body), 422)


# --- bodies -----------------------------------------------------------------------------


def gateway_rss(stack) -> int:
    return psutil.Process(stack._processes["gateway"].pid).memory_info().rss


def two_hundred_megabytes() -> Iterator[bytes]:
    chunk = b"x" * MB
    for _ in range(200):
        yield chunk


def test_a_200_mb_body_is_refused_without_being_read(stack, gateway):
    before = gateway_rss(stack)
    for method, path, headers in [
        ("GET", "/api/runs", {}),
        ("POST", f"/api/workflows/{WORKFLOW}/runs", {"Content-Type": "application/json"}),
        ("PATCH", f"/api/workflows/{WORKFLOW}/schedule", {"Content-Type": "application/json"}),
    ]:
        for length in ({"Content-Length": str(200 * MB)}, {}):  # declared, and streamed in chunks
            response = gateway.request(method, path, content=two_hundred_megabytes(), headers=headers | length)
            assert_json_4xx(response)
            assert response.status_code in ({400, 413} if method == "GET" else {413})
    # Every refusal left the gateway as it was: nothing was buffered.
    assert gateway_rss(stack) - before < 64 * MB
    assert gateway.get("/api/runs").status_code == 200


def test_a_body_just_over_the_limit_is_413_and_one_under_it_is_read(gateway):
    over = gateway.post(f"/api/workflows/{WORKFLOW}/runs", content=b" " * (MB + 1),
                        headers={"Content-Type": "application/json"})
    assert_json_4xx(over, 413)
    padded = b'{"unknown": 1' + b" " * (MB - 100) + b"}"
    # Read whole and parsed: valid JSON, but not a run request.
    assert_json_4xx(gateway.post(f"/api/workflows/{WORKFLOW}/runs", content=padded,
                                 headers={"Content-Type": "application/json"}), 422)


# --- cross-site requests, Host ----------------------------------------------------------


@pytest.mark.parametrize(("path", "content", "headers", "status"), [
    (f"/api/workflows/{WORKFLOW}/runs", b"symbols=AAPL", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    (f"/api/workflows/{WORKFLOW}/pause", b"", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    (f"/api/workflows/{WORKFLOW}/pause", b"", {"Content-Type": "text/plain"}, 415),
    (f"/api/workflows/{WORKFLOW}/pause", b"", {"Origin": "http://evil.example"}, 403),
    (f"/api/workflows/{WORKFLOW}/runs", b"{}", {"Origin": "http://evil.example",
                                                "Content-Type": "application/json"}, 403),
    (f"/api/workflows/{WORKFLOW}/resume", b"", {"Referer": "http://evil.example/csrf.html"}, 403),
    (f"/api/workflows/{WORKFLOW}/pause", b"", {"Origin": "null"}, 403),
])
def test_cross_site_and_form_mutations_are_refused_without_a_token(gateway, path, content, headers, status):
    ledger_before = gateway.get(f"/api/workflows/{WORKFLOW}/ledger").json()["entries"]
    assert_json_4xx(gateway.post(path, content=content, headers=headers), status)
    assert gateway.get(f"/api/workflows/{WORKFLOW}").json()["schedule"]["paused"] is False
    assert gateway.get(f"/api/workflows/{WORKFLOW}/ledger").json()["entries"] == ledger_before


def test_the_services_refuse_browsers_too(stack):
    scheduler = stack.env["SCHEDULER_URL"]
    response = httpx.post(f"{scheduler}/api/workflows/{WORKFLOW}/pause", headers={"Origin": "http://evil.example"})
    assert_json_4xx(response, 403)
    form = httpx.post(f"{scheduler}/api/workflows/{WORKFLOW}/runs", data={"symbols": "AAPL"})
    assert_json_4xx(form, 415)


@pytest.mark.parametrize("host", ["evil.example", "rebind.evil.example:8000", "127.0.0.1.nip.io"])
def test_a_wrong_host_is_refused(gateway, host):
    assert_json_4xx(gateway.get("/api/runs", headers={"Host": host}), 400)
    assert_json_4xx(gateway.get("/runs", headers={"Host": host}), 400)


def test_pages_send_their_security_headers(gateway):
    page = gateway.get("/runs")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"


# --- live streams and an artifact from outside the store --------------------------------


async def produce(stack, *events) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"])
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(event.topic, event.to_bytes(), key=event.key)
    finally:
        await producer.stop()


def wait_for(probe, timeout: float = 90.0):
    async def poll():
        async with asyncio.timeout(timeout):
            while not (result := await probe()):
                await asyncio.sleep(0.5)
            return result
    return poll()


async def test_twelve_live_streams_and_the_api_still_answers(stack):
    execution_id = f"hostile-{uuid.uuid4().hex[:8]}"
    ids = {"workflow_id": WORKFLOW, "execution_id": execution_id}
    await produce(stack, RunStarted(**ids, steps=["fetch_market_data"]), LogRecorded(**ids, message="first"))
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
        async def run_listed():
            return (await client.get(f"/api/runs/{execution_id}/logs")).status_code == 200
        await wait_for(run_listed)

        async with contextlib.AsyncExitStack() as open_streams:
            streams = [await open_streams.enter_async_context(
                client.stream("GET", f"/api/runs/{execution_id}/logs/stream")) for _ in range(12)]
            assert [s.status_code for s in streams] == [200] * 12
            lines = [s.aiter_lines() for s in streams]
            firsts = [await next_data(each) for each in lines]
            assert all('"message":"first"' in line for line in firsts)
            answers = await asyncio.gather(*(client.get("/api/runs") for _ in range(10)))
            assert [a.status_code for a in answers] == [200] * 10
            await produce(stack, LogRecorded(**ids, message="second"))
            seconds = [await next_data(each) for each in lines]
            assert all('"message":"second"' in line for line in seconds)


async def next_data(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("data:"):
            return line
    raise AssertionError("the stream ended")


async def test_an_artifact_outside_the_store_is_dead_lettered_with_the_reason(stack):
    execution_id = f"hostile-{uuid.uuid4().hex[:8]}"
    ids = {"workflow_id": WORKFLOW, "execution_id": execution_id}
    outside = ArtifactCreated(**ids, name="passwd", kind="report", uri="file:///etc/passwd", sha256="0" * 64,
                              size_bytes=10)
    inside = ArtifactCreated(**ids, name="fine", kind="report", payload={"ok": True})
    await produce(stack, outside, inside)

    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
        async def listed():
            body = (await client.get("/api/artifacts", params={"execution_id": execution_id})).json()
            return body["artifacts"] if body["artifacts"] else None
        artifacts = await wait_for(listed)
    assert [a["name"] for a in artifacts] == ["fine"]  # same partition, so the outside one came first

    letter = await dead_letter_for(stack, str(outside.event_id))
    assert "uri this service will not read" in letter["reason"] and "artifacts" in letter["consumer"]


async def dead_letter_for(stack, event_id: str) -> dict:
    consumer = AIOKafkaConsumer(topics.DEADLETTER, bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"],
                                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        async with asyncio.timeout(90):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        letter = json_value(record.value)
                        if letter and event_id in json.dumps(letter):
                            return letter
    finally:
        await consumer.stop()


@pytest.mark.parametrize("method", ["OPTIONS", "DELETE", "PUT"])
def test_methods_nobody_documents_are_refused_not_broken(gateway, method):
    for path in ("/api/workflows/x/nothing-here", f"/api/workflows/{WORKFLOW}/pause", "/api/runs"):
        response = gateway.request(method, path, headers={"Content-Length": "0"})
        assert_json_4xx(response)
