"""How a start-up that is not done, or failed, is told: the `starting` status, the
gateway's view of it, the error line read from a service's log, the restart back-off."""

from __future__ import annotations

import json

import pytest

from ibflow import service_logs
from ibflow.supervisor import FIRST_DELAY_SECONDS, MAX_DELAY_SECONDS, STABLE_AFTER_SECONDS, _Restarts
from services.gateway.health import aggregate
from shared.health import ComponentHealth, HealthReport, worst
from shared.startup import Startup

pytestmark = pytest.mark.unit

URLS = {"artifacts": "http://a:8001", "scheduler": "http://s:8002", "signals": "http://g:8003"}
OK = ComponentHealth(status="ok")


def starting(service: str, reason: str) -> HealthReport:
    startup = Startup(service, exit_on_failure=False)
    startup.step(reason)
    return HealthReport.of(service, {"startup": startup.component()})


def ready_reports() -> dict[str, HealthReport]:
    database = ComponentHealth(status="ok", detail={"host": "db", "port": 5432, "database": "ibflow"})
    return {
        "artifacts": HealthReport.of("artifacts", {"database": database, "broker": OK}),
        "scheduler": HealthReport.of("scheduler", {"database": database, "broker": OK}),
        "signals": HealthReport.of("signals", {"ibkr": OK, "broker": OK}),
    }


def test_starting_outranks_degraded_and_is_outranked_by_unhealthy():
    assert worst(["ok", "degraded", "starting"]) == "starting"
    assert worst(["starting", "unhealthy"]) == "unhealthy"


def test_a_starting_service_reports_what_it_waits_for():
    report = starting("signals", "waiting for the broker at 127.0.0.1:19092")
    assert report.status == "starting"
    assert report.components["startup"].error == "waiting for the broker at 127.0.0.1:19092"


def test_the_gateway_says_starting_with_the_reason_when_a_service_starts():
    reports = ready_reports()
    reports["artifacts"] = starting("artifacts", "database schema check at postgresql+asyncpg://db/ibflow")
    reports["signals"] = starting("signals", "waiting for the broker at k:9092")
    result = aggregate(reports, URLS, OK)
    assert result.status == "starting"
    assert result.components["artifacts"].status == "starting"
    assert "database schema check" in result.components["artifacts"].error
    # the scheduler still reports the database: the database component is its view
    assert result.components["database"].status == "ok"
    ibkr = result.components["ibkr"]
    assert ibkr.status == "starting"
    assert ibkr.error == "the signals service is starting: waiting for the broker at k:9092"


def test_the_database_is_starting_when_every_service_that_uses_it_is():
    reports = ready_reports()
    reports["artifacts"] = starting("artifacts", "database schema check at db")
    reports["scheduler"] = starting("scheduler", "database schema check at db")
    database = aggregate(reports, URLS, OK).components["database"]
    assert database.status == "starting"
    assert database.error == ("artifacts is starting: database schema check at db; "
                              "scheduler is starting: database schema check at db")


def test_something_down_outweighs_a_service_that_starts():
    reports = ready_reports()
    reports["signals"] = starting("signals", "waiting for the broker at k:9092")
    result = aggregate(reports, URLS, ComponentHealth(status="unhealthy", error="broker unreachable"))
    assert result.status == "unhealthy"


def log_line(level: str, message: str, **extra) -> str:
    return json.dumps({"level": level, "logger": "x", "message": message, **extra})


def test_the_start_up_failure_line_is_the_first_error_shown():
    lines = [
        log_line("INFO", "start-up: waiting for the broker at k:9092"),
        log_line("ERROR", "Unexpected error during InitProducerIdRequest: <class 'aiokafka.errors.UnknownError'>"),
        log_line("ERROR", "signals cannot start: the Kafka broker at k:9092 refuses idempotent producers",
                 startup="failed"),
    ]
    assert service_logs.first_errors(lines) == [
        "signals cannot start: the Kafka broker at k:9092 refuses idempotent producers"
    ]


def test_without_a_start_up_line_the_first_errors_then_a_traceback_summary_are_shown():
    lines = [log_line("WARNING", "slow"), log_line("ERROR", "first"), log_line("CRITICAL", "second")]
    assert service_logs.first_errors(lines) == ["first", "second"]
    traceback = ["Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
                 "pydantic_core._pydantic_core.ValidationError: 1 validation error for ArtifactsSettings"]
    assert service_logs.first_errors(traceback) == [traceback[-1]]
    assert service_logs.first_errors([log_line("INFO", "fine"), "plain text"]) == []


def test_the_last_error_of_a_dead_process_is_its_latest():
    lines = [log_line("ERROR", "old"), log_line("INFO", "fine"), log_line("ERROR", "latest"), log_line("INFO", "x")]
    assert service_logs.last_error(lines) == "latest"
    assert service_logs.last_error([log_line("INFO", "fine")]) is None


def test_exit_codes_and_signals_in_words():
    assert service_logs.describe_exit(3) == "exit code 3"
    assert service_logs.describe_exit(-9) == "killed by SIGKILL"


def test_log_lines_are_read_from_where_the_process_began(tmp_path):
    log = tmp_path / "signals.log"
    log.write_text(log_line("ERROR", "a run before") + "\n")
    offset = log.stat().st_size
    with log.open("a") as output:
        output.write(log_line("ERROR", "this run") + "\n")
    assert service_logs.first_errors(service_logs.read_since(log, offset)) == ["this run"]
    assert service_logs.read_since(tmp_path / "missing.log") == []


def test_restart_delays_double_to_the_cap_and_start_over_after_a_stable_run():
    restarts = _Restarts()
    delays = [restarts.schedule(now=0.0) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert delays[0] == FIRST_DELAY_SECONDS and max(delays) == MAX_DELAY_SECONDS
    restarts.started(100.0, awaiting_ready=None)
    restarts.note_uptime(100.0 + STABLE_AFTER_SECONDS / 2)
    assert restarts.schedule(now=130.0) == MAX_DELAY_SECONDS
    restarts.started(200.0, awaiting_ready=None)
    restarts.note_uptime(200.0 + STABLE_AFTER_SECONDS)
    assert restarts.schedule(now=300.0) == FIRST_DELAY_SECONDS
