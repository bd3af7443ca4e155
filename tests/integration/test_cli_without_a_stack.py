"""With nothing to reach, each tool command says which variable to set, never a traceback."""

from __future__ import annotations

import pytest

from ibflow import cli, stack_config

pytestmark = pytest.mark.integration
# Nothing listens on port 1: what a stopped stack looks like from outside.
NOTHING = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "GATEWAY_URL": "http://127.0.0.1:1"}


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No ibflow variable set, no .env, no stack recorded."""
    for name in (*stack_config.RECORDED, stack_config.STACK_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(stack_config.STACK_FILE_ENV, str(tmp_path / "stack.json"))
    return tmp_path


@pytest.mark.parametrize("command, variable", [
    (["migrate"], "DATABASE_URL"),
    (["topics"], "KAFKA_BOOTSTRAP_SERVERS"),
    (["trigger"], "GATEWAY_URL"),
    (["deadletter", "list"], "KAFKA_BOOTSTRAP_SERVERS"),
    (["deadletter", "replay", "--all", "--yes"], "KAFKA_BOOTSTRAP_SERVERS"),
])
def test_each_command_names_the_variable_to_set(clean_env, monkeypatch, capsys, command, variable):
    if variable in NOTHING:
        monkeypatch.setenv(variable, NOTHING[variable])
    code = cli.main(command)
    err = capsys.readouterr().err
    assert code != 0
    assert variable in err and "Traceback" not in err


def test_no_database_url_and_no_stack_points_at_make_run(clean_env, capsys):
    assert cli.main(["migrate"]) == 1
    err = capsys.readouterr().err
    assert "DATABASE_URL is not set" in err and "make run" in err


def test_an_unreachable_database_is_named_with_its_password_masked(clean_env, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@127.0.0.1:1/x")
    assert cli.main(["migrate"]) == 1
    err = capsys.readouterr().err
    assert "127.0.0.1:1" in err and "hunter2" not in err
    assert "DATABASE_URL is set in the environment" in err
