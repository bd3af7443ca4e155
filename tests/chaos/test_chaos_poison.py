"""Poison values on every consumed topic, each followed by a good event on its partition.

What a hostile outside producer can send: JSON nested 5,000 deep, a 5,000-digit
integer, an `occurred_at` in 2099, invalid UTF-8, a value that is not an object, and
(on `ibflow.artifacts`) metadata 300 levels deep. Every consumer of the topic must
dead-letter each of them exactly once, with a reason, and go on to the good event
behind it. Afterwards every page and list answers, no service spins, and a run goes
through. A log line of 4,990 `[` and 4,990 `]` is not poison: it is stored and shown.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import Counter

import httpx
import psutil
import pytest
from aiokafka import AIOKafkaProducer

from shared import topics
from shared.events import ArtifactCreated, Event, LogRecorded, RunRequested, RunStarted
from tests.chaos.chaos_db import fetch_value
from tests.chaos.chaos_kafka import dead_letters
from tests.support import wait_for_run

pytestmark = pytest.mark.chaos

WORKFLOW = "ibkr_trading_signal_workflow"
PROBE_WORKFLOW = "chaos_poison_probe"  # a workflow the signals service does not run: it fails the run at once
CONSUMERS = {
    topics.RUNS_REQUESTED: {"signals", "artifacts"},
    topics.RUNS_EVENTS: {"artifacts", "scheduler.run_events"},
    topics.ARTIFACTS: {"artifacts"},
    topics.LOGS: {"artifacts"},
}
# the field of each topic's events that holds free-form JSON
FREE_FORM = {topics.RUNS_REQUESTED: "params", topics.RUNS_EVENTS: "params", topics.ARTIFACTS: "payload",
             topics.LOGS: "fields"}
BRACKETS = "[" * 4990 + "]" * 4990
WAIT = 120  # an upper bound for "never", not a speed requirement
CPU_LIMIT_PERCENT = 10


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def good_event(topic: str, execution_id: str) -> Event:
    ids = {"workflow_id": PROBE_WORKFLOW, "execution_id": execution_id}
    if topic == topics.RUNS_REQUESTED:
        return RunRequested(**ids, trigger="manual")
    if topic == topics.RUNS_EVENTS:
        return RunStarted(**ids, steps=["probe"])
    if topic == topics.ARTIFACTS:
        return ArtifactCreated(**ids, step_name="probe", name="good", kind="metrics", payload={"ok": True})
    return LogRecorded(**ids, step_name="probe", message="good", fields={"ok": True})


def with_raw(event: Event, field: str, raw_json: str) -> bytes:
    """The event's JSON with one field replaced by raw JSON text (which json.dumps would refuse to build)."""
    value = event.model_dump(mode="json")
    value[field] = "__RAW__"
    return json.dumps(value).replace('"__RAW__"', raw_json).encode()


def poisons(topic: str, key: str) -> dict[str, bytes]:
    event = good_event(topic, key)
    future = event.model_dump(mode="json") | {"occurred_at": "2099-01-01T00:00:00Z"}
    values = {
        "nested 5,000 deep": with_raw(event, FREE_FORM[topic], nested(5000)),
        "a 5,000-digit integer": with_raw(event, FREE_FORM[topic], '{"n": ' + "9" * 5000 + "}"),
        "occurred_at in 2099": json.dumps(future).encode(),
        "invalid UTF-8": b"\xff\xfe" + event.to_bytes(),
        "not an object": b'["an", "array", 1]',
    }
    if topic == topics.ARTIFACTS:
        values["metadata 300 deep"] = with_raw(event, "metadata", nested(300))
    return values


def service_pids(stack) -> dict[str, int]:
    """The process listening on each service's port."""
    ports = {int(stack.env[f"{name.upper()}_PORT"]): name for name in ("artifacts", "scheduler", "signals", "gateway")}
    return {ports[c.laddr.port]: c.pid for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port in ports and c.pid}


def cpu_percent(pids: dict[str, int], seconds: float = 5.0) -> dict[str, float]:
    processes = {name: psutil.Process(pid) for name, pid in pids.items()}
    for process in processes.values():
        process.cpu_percent(None)
    time.sleep(seconds)
    return {name: process.cpu_percent(None) for name, process in processes.items()}


def wait_until(pending, what: str, timeout: float = WAIT) -> None:
    """Until `pending()` comes back empty; fails with what it still held."""
    deadline = time.monotonic() + timeout
    left = pending()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = pending()
    assert not left, f"timed out waiting for {what}; still pending: {left}"


async def wait_dead_letters(bootstrap: str, keys: set[str], expected: int) -> list:
    deadline = time.monotonic() + WAIT
    letters = []
    while time.monotonic() < deadline:
        letters = await dead_letters(bootstrap, keys, idle_seconds=1.0)
        if len(letters) >= expected:
            break
        await asyncio.sleep(1)
    # whatever a consumer might still send twice has had its chance
    await asyncio.sleep(3)
    return await dead_letters(bootstrap, keys, idle_seconds=2.0)


async def test_poison_on_every_topic_is_dead_lettered_once_and_the_good_events_get_through(start_stack):
    stack = start_stack()
    gateway, api = stack.gateway_url, stack.env["ARTIFACTS_URL"]
    bootstrap, database_url = stack.env["KAFKA_BOOTSTRAP_SERVERS"], stack.env["DATABASE_URL"]
    suffix = uuid.uuid4().hex[:6]
    sent: dict[str, tuple[str, str, bytes]] = {}  # key -> topic, kind, poison value
    good: dict[str, str] = {}  # execution id of a good event -> its topic
    brackets = LogRecorded(workflow_id=PROBE_WORKFLOW, execution_id=f"brackets-{suffix}", step_name="probe",
                           message=BRACKETS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for topic in CONSUMERS:
            for n, kind in enumerate(poisons(topic, "probe")):
                # same key for the poison and the good event after it: same partition, in order
                key = f"poison-{topic.removeprefix('ibflow.').replace('.', '-')}-{n}-{suffix}"
                value = poisons(topic, key)[kind]
                sent[key] = (topic, kind, value)
                await producer.send_and_wait(topic, value, key=key.encode())
                event = good_event(topic, key)
                good[key] = topic
                await producer.send_and_wait(topic, event.to_bytes(), key=event.key)
        await producer.send_and_wait(brackets.topic, brackets.to_bytes(), key=brackets.key)
    finally:
        await producer.stop()

    def not_yet_stored() -> dict[str, str]:
        """The good events not (fully) taken yet, with what is seen of each."""
        pending = {}
        for key, topic in good.items():
            run = httpx.get(f"{api}/api/runs/{key}", timeout=10)
            body = run.json() if run.status_code == 200 else {}
            taken = {
                # a request is taken by the signals service once it fails the probe run
                topics.RUNS_REQUESTED: body.get("status") == "failed",
                topics.RUNS_EVENTS: run.status_code == 200,
                topics.ARTIFACTS: body.get("artifact_count") == 1,
                topics.LOGS: body.get("log_count") == 1,
            }[topic]
            if not taken:
                pending[key] = f"{sent[key][1]} on {topic}: {run.status_code} {body.get('status')}"
        return pending

    await asyncio.to_thread(wait_until, not_yet_stored, "every good event behind a poison to be stored")
    for key, topic in good.items():
        if topic == topics.RUNS_REQUESTED:
            assert "does not run workflow" in httpx.get(f"{api}/api/runs/{key}").json()["error"]
        if topic == topics.RUNS_EVENTS:
            # the scheduler took the good run event behind the poison too
            assert await fetch_value(database_url, "SELECT status FROM tracked_runs WHERE execution_id = $1",
                                     key) is not None, key

    expected = {(key, consumer) for key, (topic, _, _) in sent.items() for consumer in CONSUMERS[topic]}
    letters = await wait_dead_letters(bootstrap, set(sent), len(expected))
    counted = Counter((letter.source_key, letter.consumer) for letter in letters)
    missing = {(key, consumer, sent[key][1]) for key, consumer in expected - set(counted)}
    assert not missing, f"not dead-lettered: {sorted(missing)}"
    twice = {pair: n for pair, n in counted.items() if n > 1 or pair not in expected}
    assert not twice, f"dead-lettered more than once, or by a consumer of another topic: {twice}"
    for letter in letters:
        topic, kind, value = sent[letter.source_key]
        assert letter.reason.strip(), f"{kind} on {topic}: a dead letter without a reason"
        assert letter.source_topic == topic
        assert base64.b64decode(letter.original_value_base64) == value, f"{kind} on {topic}: not the poison"

    logs = httpx.get(f"{api}/api/runs/{brackets.execution_id}/logs", timeout=10)
    assert logs.status_code == 200 and [r["message"] for r in logs.json()["logs"]] == [BRACKETS]
    lines = httpx.get(f"{gateway}/ui/runs/{brackets.execution_id}/log-lines", timeout=30)
    assert lines.status_code == 200 and "[" * 100 in lines.text

    pages = ["/artifacts", "/runs", "/workflows", "/api/artifacts/", "/api/artifacts/by-execution", "/api/runs",
             "/api/workflows", f"/runs/{brackets.execution_id}"]
    pages += [f"/runs/{key}" for key in good]
    artifact_ids = [a["artifact_id"] for a in httpx.get(f"{gateway}/api/artifacts/", params={"limit": 500},
                                                        timeout=30).json()["artifacts"]]
    pages += [f"/artifacts/{artifact_id}" for artifact_id in artifact_ids]
    pages += [f"/api/artifacts/{artifact_id}" for artifact_id in artifact_ids]
    failing = {page: status for page in pages
               if (status := httpx.get(f"{gateway}{page}", timeout=30).status_code) != 200}
    assert not failing, failing

    pids = service_pids(stack)
    assert len(pids) == 4, pids
    busy = {name: percent for name, percent in (await asyncio.to_thread(cpu_percent, pids)).items()
            if percent > CPU_LIMIT_PERCENT}
    assert not busy, f"services still busy after the poison: {busy} (% of one core)"

    response = httpx.post(f"{gateway}/api/workflows/{WORKFLOW}/runs", json={"params": {"symbols": ["AAPL"]}},
                          timeout=30)
    assert response.status_code == 202, response.text
    run = await asyncio.to_thread(wait_for_run, gateway, response.json()["execution_id"], 180)
    assert run["status"] == "succeeded", run
