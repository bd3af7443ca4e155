"""kill -9 of the signals service in the middle of a run.

The request is committed only once its run has an outcome (ack policy NACK_ON_ERROR),
so a signals process killed mid-run leaves it uncommitted: the restarted service
is handed the same request and runs the workflow again, emitting the same
deterministic event ids, which the artifacts service stores once. The run ends
`succeeded`, with exactly the steps, artifacts and log lines of an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections import Counter

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.artifacts.ingest.consumer import CONSUMED_TOPICS
from shared import topics
from shared.events import RunParams, RunRequested
from tests.chaos.chaos_db import fetch
from tests.chaos.chaos_kafka import dead_letters, skip_to_end
from tests.chaos.chaos_processes import ServiceProcess, consumer_running, ibflow_command
from tests.support import private_tmp

pytestmark = pytest.mark.chaos

WORKFLOW = "ibkr_trading_signal_workflow"
STEPS = ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]
SYMBOLS = ["AAPL", "MSFT", "IBM"]
RUN_TIMEOUT = 180  # an upper bound for "never ends", not a speed requirement


class Stack:
    def __init__(self, database_url: str, bootstrap: str, artifacts: ServiceProcess, signals: ServiceProcess):
        self.database_url, self.bootstrap, self.artifacts, self.signals = database_url, bootstrap, artifacts, signals

    def run(self, execution_id: str) -> dict | None:
        response = httpx.get(f"{self.artifacts.url}/api/runs/{execution_id}", timeout=10)
        return response.json() if response.status_code == 200 else None

    def wait_run(self, execution_id: str, done, timeout: float = RUN_TIMEOUT, poll: float = 0.5) -> dict:
        deadline = time.monotonic() + timeout
        run = None
        while time.monotonic() < deadline:
            run = self.run(execution_id)
            if run is not None and done(run):
                return run
            time.sleep(poll)
        raise AssertionError(f"run {execution_id} not there within {timeout}s; last seen: {run}\n"
                             f"{self.signals.log_tail()}")


@pytest.fixture(scope="module")
async def stack(new_database, kafka_env, kafka_bootstrap):
    database_url = new_database("chaos_signals")
    ibflow_command("migrate", {"DATABASE_URL": database_url})
    suffix = uuid.uuid4().hex[:8]
    artifacts_group, signals_group = f"ibflow-artifacts-chaos-{suffix}", f"ibflow-signals-chaos-{suffix}"
    # only this module's requests and events: not those other modules left on the broker
    await skip_to_end(kafka_bootstrap, artifacts_group, CONSUMED_TOPICS)
    await skip_to_end(kafka_bootstrap, signals_group, [topics.RUNS_REQUESTED])
    workdir = private_tmp("chaos-signals")
    env = {**kafka_env, "DATABASE_URL": database_url, "ARTIFACT_STORE_URL": (workdir / "store").as_uri(),
           "ARTIFACTS_CONSUMER_GROUP_ID": artifacts_group, "SIGNALS_CONSUMER_GROUP_ID": signals_group,
           "MARKET_DATA_PROVIDER": "sample_file"}
    artifacts = ServiceProcess("artifacts", env, workdir).start()
    artifacts.wait_healthy(consumer_running)
    signals = ServiceProcess("signals", {**env, "ARTIFACTS_URL": artifacts.url}, workdir).start()
    signals.wait_healthy()
    try:
        yield Stack(database_url, kafka_bootstrap, artifacts, signals)
    finally:
        signals.stop()
        artifacts.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def request_run(bootstrap: str, execution_id: str) -> None:
    request = RunRequested(workflow_id=WORKFLOW, execution_id=execution_id, trigger="manual",
                           params=RunParams(symbols=SYMBOLS))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(request.topic, request.to_bytes(), key=request.key)
    finally:
        await producer.stop()


def finished(run: dict) -> bool:
    return run["status"] in {"succeeded", "failed"}


def mid_run(run: dict) -> bool:
    done = [s for s in run["steps"] if s["status"] == "succeeded"]
    return run["status"] == "running" and 1 <= len(done) < len(STEPS)


async def stored_rows(database_url: str, execution_id: str) -> dict:
    events = await fetch(database_url, "SELECT event_type, step_name FROM run_events WHERE execution_id = $1",
                         execution_id)
    artifacts = await fetch(database_url, "SELECT step_name, name FROM artifacts WHERE execution_id = $1",
                            execution_id)
    logs = await fetch(database_url, "SELECT count(*) FROM log_records WHERE execution_id = $1", execution_id)
    return {
        "events": Counter((r["event_type"], r["step_name"]) for r in events),
        "artifacts": Counter((r["step_name"], r["name"]) for r in artifacts),
        "logs": logs[0][0],
    }


async def test_a_run_whose_signals_process_is_killed_midway_is_rerun_to_success_once(stack):
    # a run before both, so that each has a previous run to compare with (and so a signals_diff)
    warm_up_id = f"chaos-warm-up-{uuid.uuid4().hex[:8]}"
    await request_run(stack.bootstrap, warm_up_id)
    assert (await asyncio.to_thread(stack.wait_run, warm_up_id, finished))["status"] == "succeeded"
    # an uninterrupted run first: what the killed one must end up with, no more, no less
    reference_id = f"chaos-reference-{uuid.uuid4().hex[:8]}"
    await request_run(stack.bootstrap, reference_id)
    reference = await asyncio.to_thread(stack.wait_run, reference_id, finished)
    assert reference["status"] == "succeeded", reference
    expected = await stored_rows(stack.database_url, reference_id)

    execution_id = f"chaos-killed-{uuid.uuid4().hex[:8]}"
    await request_run(stack.bootstrap, execution_id)
    at_kill = await asyncio.to_thread(stack.wait_run, execution_id, mid_run, poll=0.05)
    stack.signals.kill()
    at_kill = stack.run(execution_id) or at_kill
    assert at_kill["status"] == "running", at_kill
    stack.signals.start()
    run = await asyncio.to_thread(stack.wait_run, execution_id, finished)

    assert run["status"] == "succeeded", run
    assert [(s["step_name"], s["status"]) for s in run["steps"]] == [(step, "succeeded") for step in STEPS]
    rows = await stored_rows(stack.database_url, execution_id)
    assert rows["events"] == expected["events"]
    assert max(rows["events"].values()) == 1
    assert rows["artifacts"] == expected["artifacts"]
    assert max(rows["artifacts"].values()) == 1
    assert rows["logs"] == expected["logs"]
    assert (run["artifact_count"], run["log_count"]) == (sum(expected["artifacts"].values()), expected["logs"])
    assert await dead_letters(stack.bootstrap, {execution_id}) == []
