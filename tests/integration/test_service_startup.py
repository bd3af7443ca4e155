"""Start-up failure modes of the three services that use the broker, as their own
processes (`ibflow <service>`) and in-process: `/health` answers `starting` with the
reason until the service is ready, and a broker that refuses idempotent producers
stops the service with a message naming KAFKA_ENABLE_IDEMPOTENCE, with no client left
open on any path."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from ibflow.devstack.broker import TansuBroker
from ibflow.devstack.ports import free_port
from ibflow.services import SERVICES
from services.artifacts.main import create_app as artifacts_app
from services.artifacts.migrate import migrate as migrate_artifacts
from services.artifacts.settings import ArtifactsSettings
from services.scheduler.main import create_app as scheduler_app
from services.scheduler.migrate import migrate as migrate_scheduler
from services.scheduler.settings import SchedulerSettings
from services.signals.main import create_app as signals_app
from services.signals.settings import SignalsSettings
from shared.kafka import IdempotenceRefused, new_broker, start_broker
from shared.settings import KafkaSettings
from shared.startup import EXIT_CODE, running
from tests.conftest import stack_env

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
BROKER_SERVICES = ("artifacts", "scheduler", "signals")
LEAK = "Unclosed AIOKafka"


@pytest.fixture(scope="module")
async def database_url(new_database) -> str:
    url = new_database("startup")
    await migrate_artifacts(url)
    await migrate_scheduler(url)
    return url


def service_env(name: str, database_url: str, kafka_env: dict[str, str], store: Path, **overrides: str) -> dict:
    env = {
        **kafka_env,
        SERVICES[name].port_env: str(free_port()),
        "ARTIFACT_STORE_URL": store.as_uri(),
        "MARKET_DATA_PROVIDER": "sample_file",
        # nothing listens there: the signals report says there is no previous run
        "ARTIFACTS_URL": "http://127.0.0.1:9",
        "SIGNALS_CONSUMER_GROUP_ID": f"startup-test-signals-{free_port()}",
        "ARTIFACTS_CONSUMER_GROUP_ID": f"startup-test-artifacts-{free_port()}",
        "IBFLOW_STACK_FILE": str(store / "no-stack.json"),
        **({"DATABASE_URL": database_url} if name != "signals" else {}),
        **overrides,
    }
    return stack_env(**env)


class ServiceProcess:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{env[SERVICES[name].port_env]}"
        self.log = log_dir / f"{name}.log"
        with self.log.open("ab") as output:
            self.process = subprocess.Popen([sys.executable, "-m", "ibflow.cli", name], env=env, cwd=REPO,
                                            stdout=output, stderr=subprocess.STDOUT)

    def health(self) -> tuple[int, dict] | None:
        try:
            response = httpx.get(f"{self.url}/health", timeout=5)
            return response.status_code, response.json()
        except (httpx.HTTPError, ValueError):
            return None

    def wait_health(self, until, what: str, timeout: float = 120) -> tuple[int, dict]:
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{self.name} exited ({self.process.returncode}):\n{self.output()}"
            seen = self.health()
            if seen is not None and until(*seen):
                return seen
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no {what} within {timeout}s; last /health: {seen}\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        process.stop()


def test_health_says_starting_until_the_broker_comes_then_ok_by_itself(database_url, kafka_env, tmp_path,
                                                                      processes):
    port = free_port()
    servers = f"127.0.0.1:{port}"
    for name in BROKER_SERVICES:
        env = service_env(name, database_url, kafka_env, tmp_path, KAFKA_BOOTSTRAP_SERVERS=servers)
        processes.append(ServiceProcess(name, env, tmp_path))

    waiting = f"waiting for the broker at {servers}"
    for service in processes:
        status, body = service.wait_health(
            lambda status, body: body["components"].get("startup", {}).get("detail", {}).get("last_error"),
            what="start-up that tried the broker",
        )
        startup = body["components"]["startup"]
        assert (status, body["status"], startup["status"]) == (503, "starting", "starting")
        assert startup["detail"]["reason"] == waiting
        assert "KafkaConnectionError" in startup["detail"]["last_error"]
    scheduler = processes[1]
    api = httpx.get(f"{scheduler.url}/api/workflows", timeout=10)
    assert api.status_code == 503
    assert api.json()["error"].startswith(f"the scheduler service is starting: {waiting}")

    with TansuBroker(port=port, log_file=tmp_path / "tansu.log"):
        for service in processes:
            service.wait_health(lambda status, body: status == 200 and body["status"] == "ok", what="ok")
        for service in processes:
            service.stop()
    for service in processes:
        assert LEAK not in service.output()


@pytest.mark.parametrize("name", BROKER_SERVICES)
def test_a_refused_idempotent_producer_stops_the_process_naming_the_variable(name, database_url, kafka_env,
                                                                            tmp_path, processes):
    env = service_env(name, database_url, kafka_env, tmp_path, KAFKA_ENABLE_IDEMPOTENCE="true")
    service = ServiceProcess(name, env, tmp_path)
    processes.append(service)
    assert service.process.wait(timeout=120) == EXIT_CODE
    output = service.output()
    assert f"{name} cannot start: the Kafka broker at {kafka_env['KAFKA_BOOTSTRAP_SERVERS']} refuses " \
           "idempotent producers (InitProducerId answered UnknownError)" in output
    assert "set KAFKA_ENABLE_IDEMPOTENCE=false" in output
    assert LEAK not in output


@pytest.mark.parametrize(("name", "overrides", "message"), [
    ("artifacts", {"DATABASE_URL": ""}, "DATABASE_URL is not a URL"),
    ("scheduler", {"DATABASE_URL": "mysql://ibflow@db/ibflow"},
     "invalid configuration: DATABASE_URL must point to PostgreSQL, not 'mysql'"),
    ("signals", {"KAFKA_SESSION_TIMEOUT_MS": "soon"},
     "invalid configuration: KAFKA_SESSION_TIMEOUT_MS: Input should be a valid integer"),
])
def test_an_unusable_setting_is_one_error_line_and_exit_code_3(name, overrides, message, database_url, kafka_env,
                                                                tmp_path, processes):
    service = ServiceProcess(name, service_env(name, database_url, kafka_env, tmp_path, **overrides), tmp_path)
    processes.append(service)
    assert service.process.wait(timeout=120) == EXIT_CODE
    output = service.output()
    assert f"{name} cannot start: {message}" in output
    assert "Traceback" not in output


class LeakWatch:
    """aiokafka reports a client nobody stopped when it is collected: as a
    ResourceWarning and through the event loop's exception handler (logged)."""

    def __init__(self, caplog) -> None:
        self._caplog = caplog

    def __enter__(self) -> LeakWatch:
        self._warnings = warnings.catch_warnings(record=True)
        self.caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        self._caplog.set_level(logging.ERROR, logger="asyncio")
        return self

    def __exit__(self, *exc) -> None:
        gc.collect()
        self._warnings.__exit__(*exc)

    def leaks(self) -> list[str]:
        found = [str(w.message) for w in self.caught if LEAK in str(w.message)]
        return found + [r.getMessage() for r in self._caplog.records if LEAK in r.getMessage()]


async def test_the_leak_watch_sees_a_producer_nobody_stopped(caplog):
    with LeakWatch(caplog) as watch:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{free_port()}")
        with pytest.raises(Exception):
            await producer.start()
        del producer
    assert watch.leaks()


async def test_a_broker_start_refused_for_idempotence_leaves_nothing_open(kafka_bootstrap, caplog):
    settings = KafkaSettings(_env_file=None, kafka_bootstrap_servers=kafka_bootstrap, kafka_enable_idempotence=True)
    with LeakWatch(caplog) as watch:
        for _ in range(3):  # as a retrying caller would
            broker = new_broker(settings, client_id="ibflow-startup-test")
            with pytest.raises(IdempotenceRefused, match="set KAFKA_ENABLE_IDEMPOTENCE=false"):
                await start_broker(broker, settings, client_id="ibflow-startup-test")
            await broker.stop()
            del broker
    assert watch.leaks() == []


async def test_an_unreachable_broker_start_leaves_nothing_open(caplog):
    settings = KafkaSettings(_env_file=None, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    with LeakWatch(caplog) as watch:
        broker = new_broker(settings, client_id="ibflow-startup-test")
        with pytest.raises(Exception, match="KafkaConnectionError|Unable to bootstrap"):
            await start_broker(broker, settings, client_id="ibflow-startup-test")
        await broker.stop()
        del broker
    assert watch.leaks() == []


def in_process_app(name: str, database_url: str, kafka_env: dict[str, str], store: Path):
    common = {key.lower(): value for key, value in kafka_env.items()} | {
        "_env_file": None, "kafka_enable_idempotence": True, "artifact_store_url": store.as_uri(),
    }
    if name == "artifacts":
        return artifacts_app(ArtifactsSettings(database_url=database_url, **common))
    if name == "scheduler":
        return scheduler_app(SchedulerSettings(database_url=database_url, workflow_schedule="0 9 1 1 *", **common))
    return signals_app(SignalsSettings(market_data_provider="sample_file", artifacts_url="http://127.0.0.1:9",
                                       **common))


@pytest.mark.parametrize("name", BROKER_SERVICES)
async def test_in_process_the_refusal_is_raised_and_everything_started_is_stopped(name, database_url, kafka_env,
                                                                                tmp_path, caplog):
    with LeakWatch(caplog) as watch:
        app = in_process_app(name, database_url, kafka_env, tmp_path)
        with pytest.raises(IdempotenceRefused, match="KAFKA_ENABLE_IDEMPOTENCE"):
            async with running(app):
                pass
        assert app.state.startup.state == "failed"
        del app
        await asyncio.sleep(0)
    assert watch.leaks() == []
