"""PostgreSQL stopped for 30 s in the middle of an ingest.

The consumers must hold what they fetched (no commit, no dead letter), `/health` must
say the database is down, and once it is back every service resumes by itself: no
process restarts, every event is stored once, and a new run goes through.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from tests.chaos.chaos_ingest import (
    expected_once,
    ingest_events,
    send_all,
    stored,
    stored_exactly_once,
    wait_all_stored,
)
from tests.chaos.chaos_kafka import dead_letters
from tests.support import wait_for_run

pytestmark = pytest.mark.chaos

OUTAGE_SECONDS = 30
EXECUTIONS = 60
LOGS_PER_EXECUTION = 90
ARTIFACTS_PER_EXECUTION = 10
WORKFLOW = "ibkr_trading_signal_workflow"


def health(url: str) -> dict:
    response = httpx.get(f"{url}/health", timeout=20)
    assert response.status_code in (200, 503), response.text
    return response.json()


def wait_health(url: str, predicate, what: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        body = health(url)
        if predicate(body):
            return body
        time.sleep(0.5)
    raise AssertionError(f"{url}/health never showed {what} within {timeout:.0f}s; last: {body}")


def database_status(body: dict) -> str:
    return body["components"].get("database", {}).get("status")


async def test_consumers_wait_out_a_stopped_database_and_resume_by_themselves(start_stack):
    stack = start_stack()
    assert stack.postgres is not None, "the stack must own its PostgreSQL to stop it"
    database_url = stack.env["DATABASE_URL"]
    bootstrap = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    artifacts_url = stack.env["ARTIFACTS_URL"]
    prefix = f"outage-{uuid.uuid4().hex[:8]}"
    events = ingest_events(prefix, EXECUTIONS, LOGS_PER_EXECUTION, ARTIFACTS_PER_EXECUTION)
    third = len(events) // 3
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        await send_all(producer, events[:third])
        await asyncio.sleep(0.2)  # the consumers are storing it when the database goes
        before = await stored(database_url, prefix)
        stack.postgres.stop()
        stopped_at = time.monotonic()
        try:
            await send_all(producer, events[third:2 * third])
            down = await asyncio.to_thread(wait_health, artifacts_url, lambda b: database_status(b) == "unhealthy",
                                           "the database unhealthy")
            assert down["status"] == "unhealthy", down
            system = await asyncio.to_thread(wait_health, stack.gateway_url,
                                             lambda b: database_status(b) == "unhealthy", "the database unhealthy")
            assert system["status"] == "unhealthy", system
            await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))
            assert stack.exited() == {}, "a service died while the database was down"
        finally:
            stack.postgres.start()
        await send_all(producer, events[2 * third:])
        await asyncio.to_thread(wait_health, artifacts_url, lambda b: database_status(b) == "ok",
                                "the database back", 90)
        assert await wait_all_stored(database_url, prefix, len(events)) == len(events)
    finally:
        await producer.stop()

    assert before < len(events), "the outage came after the ingest, not during it"
    assert await stored_exactly_once(database_url, prefix, events) == expected_once(events)
    # waiting out an outage is not a reason to dead-letter anything
    assert await dead_letters(bootstrap, {f"{prefix}-{n:03d}" for n in range(EXECUTIONS)}) == []
    assert stack.exited() == {}, "a service had to be restarted"
    # and the rest of the system is back too: a run goes from the API through every service
    response = httpx.post(f"{stack.gateway_url}/api/workflows/{WORKFLOW}/runs", json={}, timeout=30)
    assert response.status_code == 202, response.text
    run = await asyncio.to_thread(wait_for_run, stack.gateway_url, response.json()["execution_id"], 180)
    assert run["status"] == "succeeded", run
