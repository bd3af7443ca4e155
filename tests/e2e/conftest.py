"""A whole ibflow stack per test module: real PostgreSQL, tansu, fake IB gateway, four services."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from ibflow.stack import Stack

TERMINAL = {"succeeded", "failed"}


def stack_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "IBKR_HOST", "IBKR_PORT", "IBFLOW_API_TOKEN"}}
    # tests must not fire the real schedule while they run
    env.setdefault("WORKFLOW_SCHEDULE", "0 9 1 1 *")
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def start_stack(tmp_path_factory, kafka_env) -> Iterator[Callable[..., Stack]]:
    """Start a stack with extra environment; everything started is stopped after the module."""
    stacks: list[Stack] = []

    def start(**env: str) -> Stack:
        stack = Stack(workdir=tmp_path_factory.mktemp("stack"), env=stack_env(**env), free_ports=True,
                      durable_postgres=False)
        stacks.append(stack)
        stack.start()
        return stack

    yield start
    for stack in stacks:
        stack.stop()


def wait_for_run(gateway: str, execution_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        response = httpx.get(f"{gateway}/api/runs/{execution_id}", timeout=10)
        if response.status_code == 200:
            last = response.json()
            if last["status"] in TERMINAL:
                return last
        time.sleep(0.5)
    raise AssertionError(f"run {execution_id} did not end within {timeout}s; last seen: {last}")
