"""The gateway's /health: one entry per component, built from what the services report."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from services.gateway import health
from services.gateway.health import aggregate, mask_secrets
from services.gateway.main import create_app
from services.gateway.settings import GatewaySettings
from shared.health import ComponentHealth, HealthReport

pytestmark = pytest.mark.unit

URLS = {"artifacts": "http://a:8001", "scheduler": "http://s:8002", "signals": "http://g:8003"}
BROKER_OK = ComponentHealth(status="ok", detail={"bootstrap_servers": "k:9092"})


def database(status="ok", *, host="db.internal", database="ibflow", error=None, **extra) -> ComponentHealth:
    detail = {"host": host, "port": 5432, "database": database, "user": "ibflow",
              "url": f"postgresql+asyncpg://ibflow:***@{host}:5432/{database}", "revision": "0001", "head": "0001"}
    return ComponentHealth(status=status, detail=detail | extra, error=error)


def report(service: str, **components: ComponentHealth) -> HealthReport:
    return HealthReport.of(service, components)


def healthy_reports() -> dict:
    return {
        "artifacts": report("artifacts", database=database(), broker=BROKER_OK),
        "scheduler": report("scheduler", database=database(version_table="alembic_version_scheduler"), broker=BROKER_OK),
        "signals": report("signals", ibkr=ComponentHealth(status="ok", detail={"state": "connected"}), broker=BROKER_OK),
    }


def test_everything_answering_and_ok_is_ok():
    result = aggregate(healthy_reports(), URLS, BROKER_OK)
    assert result.status == "ok"
    assert set(result.components) == {"database", "broker", "artifacts", "scheduler", "signals", "ibkr"}
    db = result.components["database"].detail
    assert (db["host"], db["port"], db["database"]) == ("db.internal", 5432, "ibflow")
    assert db["services"]["scheduler"]["version_table"] == "alembic_version_scheduler"
    assert db["services"]["artifacts"] == {"revision": "0001", "head": "0001", "status": "ok"}
    assert result.components["ibkr"].detail["state"] == "connected"


def test_database_down_is_unhealthy_and_names_host_and_database_with_password_masked():
    reports = healthy_reports()
    down = database("unhealthy", error="database unreachable: connection refused")
    reports["artifacts"] = report("artifacts", database=down, broker=BROKER_OK)
    reports["scheduler"] = report("scheduler", database=down, broker=BROKER_OK)
    result = aggregate(reports, URLS, BROKER_OK)
    component = result.components["database"]
    assert result.status == "unhealthy"
    assert component.status == "unhealthy"
    assert component.detail["host"] == "db.internal" and component.detail["database"] == "ibflow"
    assert "***" in component.detail["url"]
    assert "artifacts: database unreachable" in component.error
    assert result.components["artifacts"].status == "unhealthy"


def test_a_password_a_service_leaks_is_masked_anyway():
    leaky = database(url="postgresql://ibflow:hunter2@db.internal:5432/ibflow", password="hunter2")
    reports = healthy_reports()
    reports["artifacts"] = report("artifacts", database=leaky,
                                  broker=ComponentHealth(status="degraded", error="at postgres://u:hunter2@x/y"))
    text = aggregate(reports, URLS, BROKER_OK).model_dump_json()
    assert "hunter2" not in text
    assert "postgresql://ibflow:***@db.internal:5432/ibflow" in text


def test_artifacts_not_answering_makes_the_system_unhealthy():
    reports = healthy_reports() | {"artifacts": "not answering (ConnectError)"}
    result = aggregate(reports, URLS, BROKER_OK)
    assert result.status == "unhealthy"
    assert result.components["artifacts"].status == "unhealthy"
    assert result.components["artifacts"].detail["url"] == URLS["artifacts"]
    assert "ConnectError" in result.components["artifacts"].error
    # the scheduler still tells where the database is
    assert result.components["database"].detail["host"] == "db.internal"


@pytest.mark.parametrize("service", ["scheduler", "signals"])
def test_scheduler_or_signals_not_answering_only_degrades(service):
    result = aggregate(healthy_reports() | {service: "no answer within 6s"}, URLS, BROKER_OK)
    assert result.components[service].status == "unhealthy"
    assert result.status == "degraded"


def test_no_service_using_the_database_answering_leaves_it_unknown():
    reports = healthy_reports() | {"artifacts": "down", "scheduler": "down"}
    component = aggregate(reports, URLS, BROKER_OK).components["database"]
    assert component.detail == {"state": "unknown"}
    assert "artifacts, scheduler" in component.error


@pytest.mark.parametrize("state, status", [("disconnected", "degraded"), ("unauthorized", "unhealthy"),
                                           ("disabled", "ok")])
def test_ibkr_trouble_degrades_but_never_makes_the_system_unhealthy(state, status):
    reports = healthy_reports()
    ibkr = ComponentHealth(status=status, detail={"state": state}, error=None if status == "ok" else "login refused")
    reports["signals"] = report("signals", ibkr=ibkr, broker=BROKER_OK)
    result = aggregate(reports, URLS, BROKER_OK)
    assert result.components["ibkr"].detail["state"] == state
    assert result.components["ibkr"].status == ("ok" if status == "ok" else "degraded")
    assert result.status in ("ok", "degraded")
    assert result.status == ("ok" if status == "ok" else "degraded")


def test_signals_not_answering_leaves_ibkr_unknown_and_degraded():
    result = aggregate(healthy_reports() | {"signals": "down"}, URLS, BROKER_OK)
    assert result.components["ibkr"].status == "degraded"
    assert result.components["ibkr"].detail == {"state": "unknown"}


def test_services_on_different_databases_are_called_out():
    reports = healthy_reports()
    reports["scheduler"] = report("scheduler", database=database(database="ibflow_old"), broker=BROKER_OK)
    component = aggregate(reports, URLS, BROKER_OK).components["database"]
    assert component.status == "degraded"
    assert "different databases" in component.error and "ibflow_old" in component.error


def test_broker_down_is_unhealthy():
    broker = ComponentHealth(status="unhealthy", detail={"bootstrap_servers": "k:9092"}, error="broker unreachable")
    assert aggregate(healthy_reports(), URLS, broker).status == "unhealthy"


def test_mask_secrets_masks_urls_and_secret_keys_only():
    masked = mask_secrets({"url": "postgresql://me:pa%40ss@h/db", "api_token": "abc", "note": "x://y",
                           "nested": [{"password": "p"}], "user": "me", "token_count": None})
    assert masked == {"url": "postgresql://me:***@h/db", "api_token": "***", "note": "x://y",
                      "nested": [{"password": "***"}], "user": "me", "token_count": None}


# --- the endpoint ---------------------------------------------------------------------


async def gateway_health(handler, monkeypatch, **settings) -> httpx.Response:
    async def broker_probe(settings, timeout):
        return BROKER_OK

    monkeypatch.setattr(health, "probe_broker", broker_probe)
    app = create_app(GatewaySettings(artifacts_url=URLS["artifacts"], scheduler_url=URLS["scheduler"],
                                     signals_url=URLS["signals"], **settings),
                     transport=httpx.MockTransport(handler))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return await client.get("/health")


async def test_endpoint_reads_reports_even_from_503_answers(monkeypatch):
    reports = healthy_reports()
    reports["artifacts"] = report("artifacts", database=database("unhealthy", error="database unreachable"))

    def handler(request: httpx.Request) -> httpx.Response:
        service = {"a": "artifacts", "s": "scheduler", "g": "signals"}[request.url.host]
        body = reports[service].model_dump(mode="json")
        return httpx.Response(503 if body["status"] == "unhealthy" else 200, json=body)

    response = await gateway_health(handler, monkeypatch)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["components"]["database"]["status"] == "unhealthy"
    assert body["components"]["database"]["detail"]["database"] == "ibflow"


async def test_endpoint_answers_in_bounded_time_when_a_service_hangs(monkeypatch):
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "g":
            await asyncio.sleep(30)
        service = {"a": "artifacts", "s": "scheduler", "g": "signals"}[request.url.host]
        return httpx.Response(200, json=healthy_reports()[service].model_dump(mode="json"))

    response = await asyncio.wait_for(gateway_health(handler, monkeypatch, health_timeout_seconds=0.2), 10)
    body = response.json()
    assert body["components"]["signals"]["status"] == "unhealthy"
    assert "no answer within 0.2s" in body["components"]["signals"]["error"]
    assert body["status"] == "degraded"


async def test_endpoint_reports_a_garbled_answer(monkeypatch):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "s":
            return httpx.Response(500, text="Internal Server Error")
        service = {"a": "artifacts", "g": "signals"}[request.url.host]
        return httpx.Response(200, json=healthy_reports()[service].model_dump(mode="json"))

    body = (await gateway_health(handler, monkeypatch)).json()
    assert body["components"]["scheduler"]["error"] == "answered 500 without a health report"
    assert json.dumps(body).count("unhealthy") == 1
