"""Service processes the chaos tests start, kill -9 and start again.

Each is `python -m ibflow.cli <service>` with its own environment, as `ibflow up`
starts it, logging to a file the failure message quotes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ibflow.devstack.ports import free_port
from ibflow.services import SERVICES
from tests.conftest import stack_env

REPO = Path(__file__).resolve().parents[2]


def _die_with_parent() -> None:
    """A service left behind by a killed pytest gets SIGTERM rather than living on."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def ibflow_command(command: str, env: dict[str, str]) -> str:
    """Run a one-shot `ibflow` command (migrate, topics) and return its output."""
    result = subprocess.run([sys.executable, "-m", "ibflow.cli", command], env=stack_env(**env), cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"`ibflow {command}` failed:\n{result.stdout}{result.stderr}"
    return result.stdout


class ServiceProcess:
    """One service process; `start` again after `kill` starts a new one on a new port."""

    def __init__(self, service: str, env: dict[str, str], log_dir: Path, *, name: str | None = None,
                 argv: list[str] | None = None) -> None:
        self.service = service
        self.name = name or service
        self.env = dict(env)
        self.log_path = log_dir / f"{self.name}.log"
        self.argv = argv or [sys.executable, "-m", "ibflow.cli", service]
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ServiceProcess:
        self.port = free_port()
        env = stack_env(**self.env, **{SERVICES[self.service].port_env: str(self.port)})
        with open(self.log_path, "ab") as output:
            self.process = subprocess.Popen(self.argv, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=_die_with_parent)
        return self

    def kill(self) -> None:
        """kill -9: no shutdown hook runs, nothing is flushed, the group is not left."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if not self.alive:
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def health(self) -> dict | None:
        try:
            response = httpx.get(f"{self.url}/health", timeout=5)
            return response.json()
        except (httpx.HTTPError, ValueError):
            return None

    def wait_healthy(self, ready: Callable[[dict], bool] = lambda body: True, timeout: float = 90) -> dict:
        """Until /health answers and `ready` holds; fails early, with the log, if the process exits."""
        deadline = time.monotonic() + timeout
        body = None
        while time.monotonic() < deadline:
            if not self.alive:
                raise AssertionError(f"{self.name} exited with {self.process and self.process.returncode}:\n"
                                     f"{self.log_tail()}")
            body = self.health()
            if body is not None and ready(body):
                return body
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready within {timeout:.0f}s; last /health: {body}\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def consumer_running(body: dict) -> bool:
    consumer = body.get("components", {}).get("consumer", {})
    return bool(consumer.get("detail", {}).get("running"))
