"""The whole stack on one machine, no Docker: what `make run` and the end-to-end tests start.

Infrastructure is embedded unless the environment names its own: PostgreSQL
(`DATABASE_URL`), the Kafka-protocol broker (`KAFKA_BOOTSTRAP_SERVERS`) and the fake IB
gateway (`IBKR_HOST`). Then topics, migrations and the four services, each its own
process. Stopping the stack stops everything it started, children first.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ibflow import stack_config
from ibflow.devstack.broker import TansuBroker
from ibflow.devstack.ports import free_port, wait_for_port
from ibflow.devstack.postgres import EmbeddedPostgres
from ibflow.services import SERVICES

log = logging.getLogger("ibflow.stack")
REPO = Path(__file__).resolve().parent.parent
DEMO_WORKFLOW = "ibkr_trading_signal_workflow"
# tansu and a dev machine: joins take about half the session timeout, so keep it short.
TANSU_ENV = {
    "KAFKA_ENABLE_IDEMPOTENCE": "false",
    "KAFKA_SESSION_TIMEOUT_MS": "6000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "2000",
    "KAFKA_FETCH_MAX_WAIT_MS": "50",
}


def _die_with_parent() -> None:
    """Children get SIGTERM if the launcher dies without cleaning up (kill -9)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Stack:
    workdir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    # Tests run beside a `make run` stack: they take free ports for everything.
    free_ports: bool = False
    durable_postgres: bool = True
    _postgres: EmbeddedPostgres | None = None
    _broker: TansuBroker | None = None
    _processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"

    @property
    def postgres(self) -> EmbeddedPostgres | None:
        return self._postgres

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stack_config.claim(self.env, self.workdir)  # its processes read this stack's file, no other
        try:
            self._start_infrastructure()
            self._prepare()
            for name in ("artifacts", "scheduler", "signals", "gateway"):
                self._spawn(name, [sys.executable, "-m", "ibflow.cli", name])
            for name in ("artifacts", "scheduler", "signals", "gateway"):
                self._wait_healthy(name)
            stack_config.record(self.env, self.workdir)  # where every other `ibflow` command finds it
        except BaseException:
            self.stop()
            raise

    def _start_infrastructure(self) -> None:
        env = self.env
        env.setdefault("ARTIFACT_STORE_URL", f"file://{self.workdir / 'artifact-store'}")
        for spec in SERVICES.values():
            if self.free_ports:
                env[spec.port_env] = str(free_port())
                env[spec.url_env] = f"http://127.0.0.1:{env[spec.port_env]}"
            env.setdefault(spec.port_env, str(spec.default_port))
            env.setdefault(spec.url_env, f"http://127.0.0.1:{env[spec.port_env]}")
        if not env.get("DATABASE_URL"):
            self._postgres = EmbeddedPostgres(
                self.workdir / "postgres",
                port=self._port("IBFLOW_EMBEDDED_PG_PORT", 55432),
                durable=self.durable_postgres,
            )
            self._postgres.start()
            env["DATABASE_URL"] = self._postgres.create_database("ibflow")
            print(f"  PostgreSQL (embedded)  {self._postgres.url('ibflow')}")
        if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
            self._broker = TansuBroker(
                port=self._port("IBFLOW_EMBEDDED_KAFKA_PORT", 19092),
                log_file=self.log_dir / "tansu.log",
            )
            self._broker.start()
            env["KAFKA_BOOTSTRAP_SERVERS"] = self._broker.bootstrap_servers
            for key, value in TANSU_ENV.items():
                env.setdefault(key, value)
            print(f"  Kafka (tansu, memory)  {self._broker.bootstrap_servers}")
        if not env.get("IBKR_HOST"):
            port = self._port("IBFLOW_FAKE_IB_PORT", 4002)
            self._spawn("fake-ib-gateway", [sys.executable, "-m", "ibflow.cli", "fake-gateway",
                                            "--host", "127.0.0.1", "--port", str(port)])
            wait_for_port("127.0.0.1", port, timeout=15)
            env["IBKR_HOST"], env["IBKR_PORT"] = "127.0.0.1", str(port)
            print(f"  fake IB gateway        127.0.0.1:{port} (replays bokeh-sampledata daily bars)")

    def _port(self, env_name: str, default: int) -> int:
        return free_port() if self.free_ports else int(self.env.get(env_name, default))

    def _prepare(self) -> None:
        """Topics and migrations, in a child so that it sees exactly the services' env."""
        for command in ("topics", "migrate"):
            result = subprocess.run([sys.executable, "-m", "ibflow.cli", command], env=self.env,
                                    capture_output=True, text=True, cwd=REPO)
            if result.returncode != 0:
                raise RuntimeError(f"`ibflow {command}` failed:\n{result.stdout}{result.stderr}")

    def _spawn(self, name: str, argv: list[str]) -> None:
        output = open(self.log_dir / f"{name}.log", "ab")
        self._processes[name] = subprocess.Popen(
            argv, env=self.env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )

    def _wait_healthy(self, name: str, timeout: float = 60) -> None:
        url = f"{self.env[SERVICES[name].url_env]}/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self._processes[name]
            if process.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the {name} service exited with {process.returncode}:\n{tail}")
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the {name} service did not answer {url} within {timeout:.0f}s")

    def exited(self) -> dict[str, int]:
        return {name: p.returncode for name, p in self._processes.items() if p.poll() is not None}

    def stop_process(self, name: str) -> None:
        process = self._processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        stack_config.mark_stopped(self.workdir)
        for name in reversed(list(self._processes)):
            self.stop_process(name)
        if self._broker:
            self._broker.stop()
            self._broker = None
        if self._postgres:
            self._postgres.stop()
            self._postgres = None


def _trigger_demo(stack: Stack) -> str:
    headers = {}
    if token := stack.env.get("IBFLOW_API_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    response = httpx.post(f"{stack.gateway_url}/api/workflows/{DEMO_WORKFLOW}/runs", json={},
                          headers=headers, timeout=10)
    response.raise_for_status()
    return response.json()["execution_id"]


def run_stack(demo: bool = True) -> int:
    logging.basicConfig(level=logging.WARNING)
    stack = Stack(workdir=REPO / "var")
    print("Starting ibflow ...")
    # Ctrl-C is handled here, once; the children run in their own sessions.
    interrupted = False

    def on_signal(signum, frame):
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
    except KeyboardInterrupt:
        print("\nStopped before the stack was up.")
        return 130
    except Exception as exc:
        print(f"\nibflow could not start: {exc}\nLogs: {stack.log_dir}", file=sys.stderr)
        return 1
    try:
        print(f"\n  ibflow is up.  UI: {stack.gateway_url}/runs   artifacts: {stack.gateway_url}/artifacts")
        print(f"  API: {stack.gateway_url}/api/   health: {stack.gateway_url}/health   docs: {stack.gateway_url}/docs")
        print(f"  service logs: {stack.log_dir}")
        if demo:
            execution_id = _trigger_demo(stack)
            print(f"  demo run triggered: {stack.gateway_url}/runs/{execution_id}")
        print("  Ctrl-C stops everything.")
        while not interrupted:
            if exited := stack.exited():
                print(f"\nA process of the stack exited: {exited}; stopping. Logs: {stack.log_dir}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        print("\nStopping ibflow ...")
        stack.stop()
        print("Stopped.")
