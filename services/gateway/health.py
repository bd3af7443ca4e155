"""`GET /health` of the whole system, assembled from what each service reports.

The gateway holds no database connection: the `database` component is what the
services that use it (artifacts, scheduler) report about the server they are actually
connected to; `ibkr` is what the signals service reports; `broker` is the gateway's
own probe. Each service is a component too, unhealthy when it does not answer.
`?full=true` adds each service's own report to its component and the gateway's own
settings (what `ibflow doctor` reads, through the one public port).

How components weigh on the overall status:
- `database`, `broker`, `artifacts` count fully: without them stored artifacts,
  runs and logs cannot be read or recorded, so the system is `unhealthy`.
- `scheduler`, `signals` and `ibkr` make the system at worst `degraded`: no new runs,
  or runs without market data, but everything stored stays readable.
- A service that answers `starting` (its start-up still runs, see `shared/startup.py`)
  makes the system `starting`, unless something is down: it is not broken, only not
  ready yet. Its start-up reason stands in for the components it cannot report yet.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from services.gateway.downstream import Downstream, Services
from shared.health import ComponentHealth, HealthReport, Status, worst
from shared.kafka import probe_broker
from shared.settings_report import settings_component

NON_CRITICAL = frozenset({"scheduler", "signals", "ibkr"})
DATABASE_SERVICES = ("artifacts", "scheduler")
CONNECTION_KEYS = ("host", "port", "database", "user", "url")

router = APIRouter()


@router.get("/health", response_model=HealthReport, tags=["gateway"],
            summary="Health of the whole system, one entry per component")
async def health(
    request: Request,
    full: bool = Query(False, description="also each service's own report and the gateway's settings"),
) -> HealthReport:
    return await system_health(request.app.state.services, request.app.state.settings, full=full)


async def system_health(services: Services, settings, *, full: bool = False) -> HealthReport:
    timeout = settings.health_timeout_seconds
    broker, *reports = await asyncio.gather(
        probe_broker(settings, timeout=settings.broker_probe_timeout_seconds),
        *(fetch_report(services.client, service, timeout) for service in services.all),
    )
    by_name = dict(zip((s.name for s in services.all), reports))
    report = aggregate(by_name, {s.name: s.base_url for s in services.all}, broker)
    if not full:
        return report
    for name, answered in by_name.items():
        if isinstance(answered, HealthReport):
            report.components[name].detail["report"] = mask_secrets(answered.model_dump(mode="json"))
    report.components["gateway"] = _masked(settings_component(settings))
    return report


async def fetch_report(client: httpx.AsyncClient, service: Downstream, timeout: float) -> HealthReport | str:
    """The service's own report, or why there is none."""
    try:
        # httpx bounds each read; this bounds the whole exchange, however it trickles.
        async with asyncio.timeout(timeout):
            response = await client.get(service.url("/health"), timeout=timeout)
    except (httpx.TimeoutException, TimeoutError):
        return f"no answer within {timeout:g}s"
    except httpx.HTTPError as exc:
        return f"not answering ({type(exc).__name__})"
    # A service reports its trouble with a 503 and the same body: read it either way.
    try:
        return HealthReport.model_validate_json(response.content)
    except ValidationError:
        return f"answered {response.status_code} without a health report"


def aggregate(reports: dict[str, HealthReport | str], urls: dict[str, str], broker: ComponentHealth) -> HealthReport:
    answered = {name: r for name, r in reports.items() if isinstance(r, HealthReport)}
    components: dict[str, ComponentHealth] = {
        "database": _database(answered, [n for n in DATABASE_SERVICES if n in reports]),
        "broker": broker,
    }
    for name, report in reports.items():
        components[name] = _service(report, urls[name])
    if "signals" in reports:
        components["ibkr"] = _ibkr(reports["signals"])
    components = {name: _masked(component) for name, component in components.items()}
    overall: Status = worst(
        _capped(c.status) if name in NON_CRITICAL else c.status for name, c in components.items()
    )
    return HealthReport(status=overall, service="gateway", components=components)


def _service(report: HealthReport | str, url: str) -> ComponentHealth:
    if isinstance(report, str):
        return ComponentHealth(status="unhealthy", detail={"url": url}, error=report)
    troubles = [f"{name}: {c.error or c.status}" for name, c in report.components.items() if c.status != "ok"]
    return ComponentHealth(
        status=report.status,
        detail={"url": url, "components": {name: c.status for name, c in report.components.items()}},
        error="; ".join(troubles) or None,
    )


def _database(answered: dict[str, HealthReport], users: list[str]) -> ComponentHealth:
    seen = {name: answered[name].components["database"] for name in users
            if name in answered and "database" in answered[name].components}
    starting = {name: _startup_reason(answered[name]) for name in users
                if name in answered and answered[name].status == "starting"}
    if not seen and starting:
        return ComponentHealth(
            status="starting", detail={"state": "starting"},
            error="; ".join(f"{name} is starting: {reason}" for name, reason in starting.items()),
        )
    if not seen:
        return ComponentHealth(
            status="degraded", detail={"state": "unknown"},
            error=f"no service that uses the database answered ({', '.join(users)})",
        )
    first = next(iter(seen.values()))
    detail: dict[str, Any] = {key: first.detail[key] for key in CONNECTION_KEYS if key in first.detail}
    # Revisions and the like differ per service (each has its own migrations).
    detail["services"] = {
        name: {k: v for k, v in c.detail.items() if k not in CONNECTION_KEYS} | {"status": c.status}
        for name, c in seen.items()
    }
    errors = [f"{name}: {c.error}" for name, c in seen.items() if c.error]
    status = worst(c.status for c in seen.values())
    # What the servers say (cluster and database) settles it when every service reports it.
    by_server = all(_server(c.detail).get("system_identifier") for c in seen.values())
    places = {name: _place(c.detail, by_server) for name, c in seen.items()}
    if len(set(places.values())) > 1:
        # The old system's worst failure: writing to one database and reading another.
        status = worst([status, "degraded"])
        errors.append("services use different databases: "
                      + ", ".join(f"{name} → {place}" for name, place in places.items()))
    return ComponentHealth(status=status, detail=detail, error="; ".join(errors) or None)


def _server(detail: dict[str, Any]) -> dict[str, Any]:
    return detail["server"] if isinstance(detail.get("server"), dict) else {}


def _place(detail: dict[str, Any], by_server: bool) -> str:
    if by_server:
        server = _server(detail)
        return f"cluster {server['system_identifier']}/{server.get('database')}"
    return f"{detail.get('host')}:{detail.get('port')}/{detail.get('database')}"


def _ibkr(report: HealthReport | str) -> ComponentHealth:
    if isinstance(report, str):
        return ComponentHealth(status="degraded", detail={"state": "unknown"},
                               error=f"the signals service is not answering: {report}")
    ibkr = report.components.get("ibkr")
    if ibkr is None and report.status == "starting":
        return ComponentHealth(status="starting", detail={"state": "starting"},
                               error=f"the signals service is starting: {_startup_reason(report)}")
    if ibkr is None:
        return ComponentHealth(status="degraded", detail={"state": "unknown"},
                               error="the signals service reports nothing about IBKR")
    # IBKR trouble never makes the system unhealthy: stored artifacts stay readable.
    return ibkr.model_copy(update={"status": _capped(ibkr.status)})


def _startup_reason(report: HealthReport) -> str:
    startup = report.components.get("startup")
    return (startup.error if startup else None) or "starting"


def _capped(status: Status) -> Status:
    return "degraded" if status == "unhealthy" else status


_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^@\s]+)(?=@)")
_SECRET_KEY = re.compile(r"password|passwd|secret|token|api[_-]?key|credential", re.IGNORECASE)


def mask_secrets(value: Any) -> Any:
    """Whatever a service reports, no password or token leaves the gateway."""
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\g<head>***", value)
    if isinstance(value, dict):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v not in (None, "") else mask_secrets(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def _masked(component: ComponentHealth) -> ComponentHealth:
    return ComponentHealth(
        status=component.status,
        detail=mask_secrets(component.detail),
        error=mask_secrets(component.error),
    )
