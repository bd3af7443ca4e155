"""The whole stack on one machine, no Docker: what `make run` and the end-to-end tests start.

Infrastructure is embedded unless the environment names its own: PostgreSQL
(`DATABASE_URL`), the Kafka-protocol broker (`KAFKA_BOOTSTRAP_SERVERS`) and the fake IB
gateway (`IBKR_HOST`). Then topics, migrations and the four services, each its own
process. Stopping the stack stops everything it started, children first.

A service that fails to start is reported with the error line of its log that says
why. Once up, `supervise()` restarts whatever dies, as a compose restart policy would
(see `ibflow/supervisor.py`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ibflow import service_logs, stack_config
from ibflow.devstack.broker import TansuBroker
from ibflow.devstack.ports import free_port, wait_for_port
from ibflow.devstack.postgres import EmbeddedPostgres
from ibflow.services import SERVICES
from ibflow.supervisor import Supervisor

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
SERVICE_ORDER = ("artifacts", "scheduler", "signals", "gateway")
# Start-up waits out outages by itself; past this the stack says what it still waits for.
READY_TIMEOUT_SECONDS = 120.0


class StackStartError(RuntimeError):
    """A service exited or never got ready; the message holds the line of its log that says why."""


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
    _argv: dict[str, list[str]] = field(default_factory=dict)
    # Where each process's part of its (appended) log begins.
    _log_offsets: dict[str, int] = field(default_factory=dict)
    # The supervisor's thread and the caller's both start and stop processes.
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _supervisor: Supervisor | None = None

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"

    @property
    def postgres(self) -> EmbeddedPostgres | None:
        return self._postgres

    @property
    def broker(self) -> TansuBroker | None:
        return self._broker

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stack_config.claim(self.env, self.workdir)  # its processes read this stack's file, no other
        try:
            self._start_infrastructure()
            self._prepare()
            for name in SERVICE_ORDER:
                self._spawn(name, [sys.executable, "-m", "ibflow.cli", name])
            self._wait_ready(SERVICE_ORDER)
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
            print(f"  PostgreSQL (embedded)  {self._postgres.url('ibflow', hide_password=True)}")
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
            self._run_tool(command)

    def _run_tool(self, command: str) -> None:
        result = subprocess.run([sys.executable, "-m", "ibflow.cli", command], env=self.env,
                                capture_output=True, text=True, cwd=REPO)
        if result.returncode != 0:
            raise RuntimeError(f"`ibflow {command}` failed:\n{result.stdout}{result.stderr}")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log_path = self.log_dir / f"{name}.log"
        with self._lock, open(log_path, "ab") as output:
            self._log_offsets[name] = output.tell()
            self._argv[name] = argv
            self._processes[name] = subprocess.Popen(
                argv, env=self.env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
            )

    def _wait_ready(self, names: tuple[str, ...], timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Until every service says it is ready; a service that exits meanwhile is
        reported at once, with the line of its log that says why."""
        deadline = time.monotonic() + timeout
        waiting = {name: "not answering yet" for name in names}
        while waiting:
            for name in list(waiting):
                if (code := self.exit_code(name)) is not None:
                    exited = f"exited during start-up ({service_logs.describe_exit(code)})"
                    raise StackStartError(self._failure(name, exited))
                ready, why = self.readiness(name)
                if ready:
                    del waiting[name]
                else:
                    waiting[name] = why
            if not waiting:
                return
            if time.monotonic() > deadline:
                name, why = next(iter(waiting.items()))
                raise StackStartError(self._failure(name, f"was not ready within {timeout:.0f}s: {why}"))
            time.sleep(0.2)

    def _failure(self, name: str, what: str) -> str:
        lines = service_logs.first_errors(self.log_lines(name))
        cause = "".join(f"\n  {line}" for line in lines) or "\n  (its log holds no error line)"
        return f"the {name} service {what}:{cause}\n  log: {self.log_dir / f'{name}.log'}"

    def readiness(self, name: str) -> tuple[bool, str]:
        """Whether the service's own `/health` says it is ready, and if not, why."""
        url = f"{self.env[SERVICES[name].url_env]}/health"
        try:
            response = httpx.get(url, timeout=2)
            report = response.json()
        except (httpx.HTTPError, ValueError):
            return False, f"no answer from {url}"
        status = report.get("status") if isinstance(report, dict) else None
        if response.status_code == 200 and status not in (None, "starting"):
            return True, str(status)
        troubles = [f"{component}: {detail.get('error') or detail.get('status')}"
                    for component, detail in (report.get("components") or {}).items()
                    if isinstance(detail, dict) and detail.get("status") != "ok"]
        return False, f"{status or response.status_code}" + (f" ({'; '.join(troubles)})" if troubles else "")

    def log_lines(self, name: str) -> list[str]:
        """What the current (or last) process of `name` wrote to its log."""
        return service_logs.read_since(self.log_dir / f"{name}.log", self._log_offsets.get(name, 0))

    def process_names(self) -> list[str]:
        with self._lock:
            return list(self._processes)

    def pid(self, name: str) -> int | None:
        with self._lock:
            process = self._processes.get(name)
            return None if process is None else process.pid

    def exit_code(self, name: str) -> int | None:
        """None while the process runs (or was stopped on purpose)."""
        with self._lock:
            process = self._processes.get(name)
            return None if process is None else process.poll()

    def exited(self) -> dict[str, int]:
        with self._lock:
            return {name: p.returncode for name, p in self._processes.items() if p.poll() is not None}

    def respawn(self, name: str) -> None:
        """Start `name` again as it was started (stopping it first if it still runs)."""
        with self._lock:
            argv = self._argv[name]
            self.stop_process(name)
            self._spawn(name, argv)

    def stop_process(self, name: str) -> None:
        with self._lock:
            process = self._processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def broker_died(self) -> bool:
        return self._broker is not None and not self._broker.running

    def restart_broker(self) -> None:
        """tansu again on the same port; its memory storage lost every topic, so they
        are created again (the services must be restarted too: they cache metadata)."""
        assert self._broker is not None
        self._broker.stop()
        self._broker.start()
        self._run_tool("topics")

    def postgres_died(self) -> bool:
        return self._postgres is not None and not self._postgres.running

    def restart_postgres(self) -> None:
        assert self._postgres is not None
        self._postgres.stop()
        self._postgres.start()

    def supervise(self, say=print) -> Supervisor:
        """Restart what dies from now on, telling `say` what happened."""
        if self._supervisor is None:
            self._supervisor = Supervisor(self, say)
            self._supervisor.start()
        return self._supervisor

    def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
        stack_config.mark_stopped(self.workdir)
        for name in reversed(self.process_names()):
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
        print("  Ctrl-C stops everything; a process that dies is restarted.")
        stack.supervise(say=lambda message: print(f"  [supervisor] {message}", flush=True))
        while not interrupted:
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        print("\nStopping ibflow ...")
        stack.stop()
        print("Stopped.")
