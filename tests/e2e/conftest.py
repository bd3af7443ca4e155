"""A whole ibflow stack per test module: real PostgreSQL, tansu, fake IB gateway, four services."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from ibflow.stack import Stack
from tests.support import private_tmp


def stack_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "IBKR_HOST", "IBKR_PORT", "IBFLOW_API_TOKEN"}}
    # tests must not fire the real schedule while they run
    env.setdefault("WORKFLOW_SCHEDULE", "0 9 1 1 *")
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def start_stack() -> Iterator[Callable[..., Stack]]:
    """Start a stack with extra environment; everything started is stopped after the module."""
    stacks: list[Stack] = []

    def start(**env: str) -> Stack:
        stack = Stack(workdir=private_tmp("stack"), env=stack_env(**env), free_ports=True,
                      durable_postgres=False)
        stacks.append(stack)
        stack.start()
        return stack

    yield start
    for stack in stacks:
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)
