"""`ibflow up` records its stack; the tool commands find it; explicit variables win."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from ibflow import cli, stack_config

pytestmark = pytest.mark.unit

STACK_ENV = {
    "DATABASE_URL": "postgresql://postgres:s3cret@127.0.0.1:55432/ibflow",
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
    "KAFKA_ENABLE_IDEMPOTENCE": "false",
    "GATEWAY_PORT": "8000",
    "GATEWAY_URL": "http://127.0.0.1:8000",
    "IBKR_HOST": "127.0.0.1",
    "IBKR_PORT": "4002",
    "ARTIFACT_STORE_URL": "file:///repo/var/artifact-store",
    "IBFLOW_API_TOKEN": "tok3n",
    "WATCHLIST": "AAPL",  # not a setting a client needs
    "HOME": "/root",
}


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No ibflow variable set, no .env, the stack file in a temp folder."""
    for name in (*stack_config.RECORDED, stack_config.STACK_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(stack_config.STACK_FILE_ENV, str(tmp_path / "stack.json"))
    saved = dict(os.environ)
    yield tmp_path
    # the commands under test fill os.environ from the stack file: none of it may leak
    os.environ.clear()
    os.environ.update(saved)


def test_the_record_is_private_and_holds_only_client_settings(tmp_path):
    path = stack_config.record(STACK_ENV, tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["status"] == "running" and document["pid"] == os.getpid()
    assert document["settings"]["DATABASE_URL"] == STACK_ENV["DATABASE_URL"]
    assert document["settings"]["KAFKA_ENABLE_IDEMPOTENCE"] == "false"
    assert "WATCHLIST" not in document["settings"] and "HOME" not in document["settings"]


def test_a_running_stack_fills_what_the_environment_leaves_unset(tmp_path):
    stack_config.record(STACK_ENV, tmp_path)
    environ = {stack_config.STACK_FILE_ENV: str(tmp_path / "stack.json"), "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}
    resolved = stack_config.apply(environ, frozenset())
    assert environ["DATABASE_URL"] == STACK_ENV["DATABASE_URL"]
    assert environ["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"  # explicit wins
    assert resolved.source("DATABASE_URL") == "stack"
    assert resolved.source("KAFKA_BOOTSTRAP_SERVERS") == "environment"
    assert resolved.source("SCHEDULER_URL") == "default"


def test_a_stopped_stack_is_not_used_and_says_so(tmp_path):
    stack_config.record(STACK_ENV, tmp_path)
    stack_config.mark_stopped(tmp_path)
    environ = {stack_config.STACK_FILE_ENV: str(tmp_path / "stack.json")}
    resolved = stack_config.apply(environ, frozenset())
    assert "DATABASE_URL" not in environ
    assert "stopped at" in resolved.hint("DATABASE_URL") and "make run" in resolved.hint("DATABASE_URL")


def test_a_stack_whose_launcher_died_is_not_used(tmp_path):
    stack_config.record(STACK_ENV, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "stack.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "pid": dead.pid}))
    found = stack_config.find({stack_config.STACK_FILE_ENV: str(path)})
    assert not found.running and f"pid {dead.pid}" in found.note


def test_only_the_process_that_recorded_the_stack_marks_it_stopped(tmp_path):
    path = stack_config.record(STACK_ENV, tmp_path)
    path.write_text(json.dumps({**json.loads(path.read_text()), "pid": 1}))  # another launcher's
    stack_config.mark_stopped(tmp_path)
    assert json.loads(path.read_text())["status"] == "running"


def test_the_processes_of_a_stack_are_pointed_at_its_own_file(tmp_path):
    env = {}
    stack_config.claim(env, tmp_path)
    assert env[stack_config.STACK_FILE_ENV] == str(tmp_path / "stack.json")


def test_secrets_are_masked_when_shown():
    assert stack_config.mask("DATABASE_URL", STACK_ENV["DATABASE_URL"]) == \
        "postgresql://postgres:***@127.0.0.1:55432/ibflow"
    assert stack_config.mask("IBFLOW_API_TOKEN", "tok3n") == "***"
    assert stack_config.mask("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092") == "127.0.0.1:19092"


def test_config_shows_the_stack_settings_masked(clean_env, capsys):
    stack_config.record(STACK_ENV, clean_env)
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    assert "postgresql://postgres:***@127.0.0.1:55432/ibflow" in out
    assert "s3cret" not in out and "tok3n" not in out
    assert "stack" in out
