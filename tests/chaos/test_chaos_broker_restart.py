"""The broker (tansu, memory storage) restarted in the middle of a run.

A memory broker comes back empty: no topics, no offsets, no groups, and whatever was
on it and not yet consumed is gone. The services must find their way back by
themselves (no restart of any ibflow process): a run requested afterwards goes
through every service and is stored once.
"""

from __future__ import annotations

import asyncio
import shutil
import time

import httpx
import pytest

from ibflow.devstack.broker import TansuBroker
from tests.chaos.chaos_db import fetch
from tests.support import TERMINAL, private_tmp, wait_for_run

pytestmark = pytest.mark.chaos

WORKFLOW = "ibkr_trading_signal_workflow"
SYMBOLS = ["AAPL", "MSFT"]
RUN_TIMEOUT = 120  # an upper bound for "never ends", not a speed requirement


@pytest.fixture(scope="module")
def broker():
    """A broker of the test's own, on a fixed port, so that it can be restarted in place."""
    workdir = private_tmp("chaos-broker")
    broker = TansuBroker(log_file=workdir / "tansu.log")
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def trigger(gateway: str) -> str:
    response = httpx.post(f"{gateway}/api/workflows/{WORKFLOW}/runs", json={"params": {"symbols": SYMBOLS}},
                          timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["execution_id"]


def wait_mid_run(gateway: str, execution_id: str, timeout: float = RUN_TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    run = None
    while time.monotonic() < deadline:
        response = httpx.get(f"{gateway}/api/runs/{execution_id}", timeout=10)
        if response.status_code == 200:
            run = response.json()
            assert run["status"] not in TERMINAL, f"the run ended before the broker could be restarted: {run}"
            if any(step["status"] == "succeeded" for step in run["steps"]):
                return run
        time.sleep(0.05)
    raise AssertionError(f"run {execution_id} did not get under way within {timeout}s; last seen: {run}")


def wait_broker_ok(gateway: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    body = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{gateway}/health", timeout=20).json()
        if body["components"]["broker"]["status"] == "ok":
            break
        time.sleep(1)
    return body


async def test_services_find_a_restarted_broker_by_themselves(start_stack, kafka_env, broker):
    # services look for lost topics every KAFKA_TOPIC_CHECK_SECONDS: short here, so the
    # test's bounded waits are about recovering, not about a 10 s poll
    stack = start_stack(**{**kafka_env, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                           "KAFKA_TOPIC_CHECK_SECONDS": "1"})
    interrupted = trigger(stack.gateway_url)
    await asyncio.to_thread(wait_mid_run, stack.gateway_url, interrupted)
    broker.stop()
    broker.start()
    # the system says it is whole again (every topic back) before the next run is asked for
    health = await asyncio.to_thread(wait_broker_ok, stack.gateway_url)
    assert health["components"]["broker"]["status"] == "ok", health

    execution_id = trigger(stack.gateway_url)
    run = await asyncio.to_thread(wait_for_run, stack.gateway_url, execution_id, RUN_TIMEOUT)
    assert run["status"] == "succeeded", run
    assert stack.exited() == {}, "an ibflow process had to be restarted"
    artifacts = await fetch(stack.env["DATABASE_URL"], "SELECT step_name, name FROM artifacts"
                                                       " WHERE execution_id = $1", execution_id)
    names = [(row["step_name"], row["name"]) for row in artifacts]
    assert len(names) == len(set(names)) == run["artifact_count"], names
    assert {step for step, _ in names} == {step["step_name"] for step in run["steps"]}
    logs = await fetch(stack.env["DATABASE_URL"], "SELECT count(*), count(DISTINCT event_id) FROM log_records"
                                                  " WHERE execution_id = $1", execution_id)
    assert tuple(logs[0]) == (run["log_count"], run["log_count"])
