"""The `ibflow` tools against a running stack, with no ibflow variable set.

They find the stack the way they find `make run`'s: through the file `ibflow up`
records (`IBFLOW_STACK_FILE` points at the test stack's, which lives in its own
folder). The last test stops the stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from ibflow import stack_config

pytestmark = pytest.mark.e2e
WORKFLOW = "ibkr_trading_signal_workflow"


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack()


@pytest.fixture(scope="module")
def env(stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in stack_config.RECORDED}
    env[stack_config.STACK_FILE_ENV] = str(stack_config.stack_file(stack.workdir))
    return env


def ibflow(env: dict[str, str], *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ibflow.cli", *argv], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_stack_is_recorded_readable_by_its_owner_only(stack):
    path = stack_config.stack_file(stack.workdir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["status"] == "running"
    settings = document["settings"]
    assert settings["DATABASE_URL"] == stack.env["DATABASE_URL"]
    assert settings["KAFKA_BOOTSTRAP_SERVERS"] == stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    assert settings["KAFKA_ENABLE_IDEMPOTENCE"] == "false"
    assert settings["GATEWAY_URL"] == stack.gateway_url


def test_migrate_and_topics_work_with_no_variables_set(env):
    migrated = ibflow(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert re.search(r"^artifacts: at \S+", migrated.stdout, re.MULTILINE)
    topics = ibflow(env, "topics")
    assert topics.returncode == 0, topics.stderr
    assert topics.stdout.strip() == "created: nothing (all exist)"


def test_config_names_the_stack_as_the_source_and_masks_passwords(env, stack):
    shown = ibflow(env, "config")
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith("DATABASE_URL"))
    assert row.split()[-1] == "stack"
    assert row.split()[1] == stack_config.mask_url(stack.env["DATABASE_URL"])


def test_trigger_prints_the_page_the_steps_and_the_signals(env, stack):
    run = ibflow(env, "trigger", "--symbols", "AAPL,MSFT", "--wait", "300")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    execution_id = lines[0]
    assert lines[1] == f"  page: {stack.gateway_url}/runs/{execution_id}"
    for step in ("fetch_market_data", "compute_features", "generate_signals", "publish_signals"):
        assert f"  step {step}: succeeded" in run.stdout
    assert f"run {execution_id} succeeded" in run.stdout
    header = lines.index(next(line for line in lines if line.startswith("symbol")))
    rows = {line.split()[0]: line.split() for line in lines[header + 1:]}
    assert set(rows) == {"AAPL", "MSFT"}
    for cells in rows.values():
        assert cells[1] in ("BUY", "SELL", "HOLD")
        assert 0 <= float(cells[2]) <= 1 and float(cells[3]) > 0


def test_a_run_with_an_unknown_symbol_is_partial_with_its_reason(env):
    run = ibflow(env, "trigger", "--symbols", "ZZZZ,AAPL", "--wait", "300")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "failed items (1):" in run.stdout
    assert re.search(r"^  ZZZZ \(fetch_market_data\): .+", run.stdout, re.MULTILINE), run.stdout
    assert re.search(r"^AAPL\s+(BUY|SELL|HOLD)", run.stdout, re.MULTILINE)


def dead_letters_of(env: dict[str, str], key: str, count: int, timeout: float = 120) -> list[list[str]]:
    """The rows of `ibflow deadletter list` for `key`, once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        listed = ibflow(env, "deadletter", "list", "--topic", "ibflow.artifacts", "--limit", "100000")
        assert listed.returncode == 0, listed.stderr
        rows = [line.split() for line in listed.stdout.splitlines() if f" {key} " in line]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def test_an_invalid_record_is_dead_lettered_and_dead_lettered_again_when_replayed(env, stack):
    key = f"cli-poison-{uuid.uuid4().hex[:8]}"
    poison = json.dumps({"event_type": "artifact.created", "workflow_id": "cli", "execution_id": key}).encode()

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"])
        await producer.start()
        try:
            await producer.send_and_wait("ibflow.artifacts", poison, key=key.encode())
        finally:
            await producer.stop()

    asyncio.run(produce())
    (first,) = dead_letters_of(env, key, 1)
    dead_letter_id = first[2]
    assert first[3] == "artifacts" and first[4].startswith("ibflow.artifacts[")
    replay = ibflow(env, "deadletter", "replay", "--id", dead_letter_id, "--yes")
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.startswith(f"replayed {dead_letter_id} to ibflow.artifacts[")
    rows = dead_letters_of(env, key, 2)
    assert len(rows) == 2 and rows[0][2] == dead_letter_id and rows[1][2] != dead_letter_id
    assert rows[0][6:] == rows[1][6:]  # the same bytes, refused for the same reason


def test_after_a_clean_stop_the_tools_say_to_start_the_stack(env, stack):
    stack.stop()
    document = json.loads(stack_config.stack_file(stack.workdir).read_text())
    assert document["status"] == "stopped" and document["stopped_at"]
    migrated = ibflow(env, "migrate")
    assert migrated.returncode == 1
    assert "stopped at" in migrated.stderr and "make run" in migrated.stderr
    assert "Traceback" not in migrated.stderr
