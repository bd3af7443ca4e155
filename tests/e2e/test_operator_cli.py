"""The operator's commands against a real stack, found through its stack file: `runs`,
`run`, `logs` (paged and followed), `artifacts` (listed and downloaded), and `doctor`,
which exits 0 on a healthy stack and 1, saying so, when the scheduler is pointed at
another database. The last test puts the stack's own scheduler back."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ibflow import stack_config
from ibflow.stack import REPO
from tests.support import wait_for_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack()


@pytest.fixture(scope="module")
def env(stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in stack_config.RECORDED}
    env[stack_config.STACK_FILE_ENV] = str(stack_config.stack_file(stack.workdir))
    return env


def ibflow(env: dict[str, str], *argv: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ibflow.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or REPO, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def partial_run(stack, env) -> str:
    triggered = ibflow(env, "trigger", "--symbols", "AAPL,TSLA")
    assert triggered.returncode == 0, triggered.stderr
    execution_id = triggered.stdout.splitlines()[0]
    assert wait_for_run(stack.gateway_url, execution_id, timeout=240)["status"] == "partial"
    return execution_id


def test_runs_lists_the_run_with_its_status_and_steps(env, partial_run):
    shown = ibflow(env, "runs", "--limit", "5")
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith(partial_run))
    assert row.split()[1:4] == ["ibkr_trading_signal_workflow", "partial", "manual"]
    assert "4/4" in row.split()
    assert ibflow(env, "runs", "--status", "failed").stdout.count(partial_run) == 0


def test_run_shows_steps_failed_items_and_artifacts(env, partial_run):
    shown = ibflow(env, "run", partial_run)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert text.startswith(f"{partial_run}  partial")
    for step in ("fetch_market_data", "compute_features", "generate_signals", "publish_signals"):
        assert re.search(rf"^{step}\s+succeeded\s+1\s", text, re.MULTILINE), text
    assert "TSLA (fetch_market_data): no security definition" in text
    assert re.search(r"^artifacts \(\d+\)$", text, re.MULTILINE)
    missing = ibflow(env, "run", "no-such-run")
    assert missing.returncode == 1 and "no run 'no-such-run'" in missing.stderr and "Traceback" not in missing.stderr


def test_logs_print_readable_lines_and_follow_ends_with_the_run(env, partial_run):
    paged = ibflow(env, "logs", partial_run)
    assert paged.returncode == 0, paged.stderr
    lines = paged.stdout.splitlines()
    assert lines and all(re.match(r"\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S+  ", line)
                         for line in lines), lines[:3]
    assert any("TSLA" in line and line.split()[1] == "WARNING" for line in lines)
    warnings = ibflow(env, "logs", partial_run, "--level", "warning").stdout.splitlines()
    assert warnings and all(line.split()[1] in ("WARNING", "ERROR", "CRITICAL") for line in warnings)

    followed = ibflow(env, "logs", partial_run, "--follow", timeout=120)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == lines
    assert f"run {partial_run} partial" in followed.stderr


def test_artifacts_are_listed_and_one_is_downloaded_intact(env, partial_run, tmp_path):
    listed = ibflow(env, "artifacts", "--execution", partial_run, "--kind", "chart")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "chart_AAPL" in line)
    artifact_id = row.split()[0]
    saved = ibflow(env, "artifacts", "--download", artifact_id, cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    [path] = tmp_path.iterdir()
    assert path.name == "chart_AAPL.svg"
    sha256 = re.search(r"sha256 ([0-9a-f]{64})", saved.stderr).group(1)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def test_doctor_finds_a_healthy_stack_healthy(env):
    checked = ibflow(env, "doctor")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "databases agree                  ok" in checked.stdout
    assert re.search(r"^consumer group ibflow-artifacts\s+ok\s+Stable, 1 member\(s\), lag unknown on this broker",
                     checked.stdout, re.MULTILINE)
    as_json = json.loads(ibflow(env, "doctor", "--json").stdout)
    assert as_json["ok"] is True
    states = {check["check"]: check["state"] for check in as_json["checks"]}
    assert states["schema of artifacts"] == states["schema of scheduler"] == "ok"
    assert states["topic ibflow.logs"] == "ok" and states["IBKR"] == "ok"
    assert "***" in as_json["services"]["artifacts"]["components"]["database"]["detail"]["url"]


def test_doctor_exits_non_zero_when_the_scheduler_uses_another_database(stack, env):
    other = stack.postgres.create_database("ibflow_other")
    migrated = ibflow(env | {"DATABASE_URL": other}, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    stack.stop_process("scheduler")
    impostor = subprocess.Popen([sys.executable, "-m", "ibflow.cli", "scheduler"], cwd=REPO,
                                env=stack.env | {"DATABASE_URL": other}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        ready_at(stack.env["SCHEDULER_URL"])
        checked = ibflow(env, "doctor")
        assert checked.returncode == 1, checked.stdout
        assert "scheduler and artifacts use different databases" in checked.stdout
        assert "give both services the same DATABASE_URL" in checked.stdout
        assert "/ibflow_other as" in checked.stdout
        assert json.loads(ibflow(env, "doctor", "--json").stdout)["ok"] is False
        # asked directly, the same answer
        direct = ibflow(env, "doctor", "--service-urls", f"scheduler={stack.env['SCHEDULER_URL']}")
        assert direct.returncode == 1 and "use different databases" in direct.stdout
    finally:
        impostor.terminate()
        impostor.wait(timeout=30)
        stack.respawn("scheduler")
    ready_at(stack.env["SCHEDULER_URL"])
    assert ibflow(env, "doctor").returncode == 0


def ready_at(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/health", timeout=5)
            if response.status_code == 200 and response.json().get("status") == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} was not ready within {timeout}s")
