"""With nothing running, `doctor`, `runs`, `run`, `logs` and `artifacts` say so in words:
no traceback, exit 1, the variable to set."""

from __future__ import annotations

import pytest

from ibflow import cli, stack_config

pytestmark = pytest.mark.integration
# Nothing listens on port 1.
NOTHING = {"GATEWAY_URL": "http://127.0.0.1:1", "ARTIFACTS_URL": "http://127.0.0.1:1",
           "SCHEDULER_URL": "http://127.0.0.1:1", "SIGNALS_URL": "http://127.0.0.1:1",
           "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}


@pytest.fixture
def nothing_running(monkeypatch, tmp_path):
    for name in (*stack_config.RECORDED, stack_config.STACK_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(stack_config.STACK_FILE_ENV, str(tmp_path / "stack.json"))
    for name, value in NOTHING.items():
        monkeypatch.setenv(name, value)


def test_doctor_reports_every_service_down_and_the_broker_unreachable(nothing_running, capsys):
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    for name in ("artifacts", "scheduler", "signals", "gateway"):
        assert f"service {name}" in out
    assert "not answering at http://127.0.0.1:1" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("argv", [["runs"], ["run", "manual-1"], ["logs", "manual-1"], ["logs", "manual-1", "-f"],
                                  ["artifacts", "--kind", "chart"], ["artifacts", "--download", "x"]])
def test_read_commands_name_the_gateway_and_the_variable(nothing_running, capsys, argv):
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "http://127.0.0.1:1" in err and "GATEWAY_URL is set in the environment" in err
    assert "Traceback" not in err


def test_output_without_download_is_refused(nothing_running, capsys):
    assert cli.main(["artifacts", "-o", "x.csv"]) == 1
    assert "-o/--output goes with --download" in capsys.readouterr().err
