"""`/health`: which database this service really reads (password masked) and at which
schema revision, whether the consumer keeps up, and whether the broker answers; until
its start-up is done, `starting` and what it waits for."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.artifacts.database import VERSION_TABLE
from services.artifacts.ingest.consumer import CONSUMED_TOPICS
from services.artifacts.runtime import Runtime
from shared.database import database_revision, describe_database
from shared.database_identity import connected_server
from shared.health import ComponentHealth, HealthReport
from shared.kafka import probe_broker
from shared.settings_report import settings_component

SERVICE = "artifacts"
router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthReport, responses={503: {"model": HealthReport}})
async def health(request: Request) -> JSONResponse:
    startup = request.app.state.startup
    if not startup.ready:
        return startup.health_response()
    runtime: Runtime = request.app.state.runtime
    consuming = runtime.settings.artifacts_consumer_enabled
    checks = {"database": database_health(runtime), "artifact_store": store_health(runtime)}
    if consuming:
        checks["broker"] = probe_broker(runtime.settings)
    results = await asyncio.gather(*checks.values())
    components = dict(zip(checks, results, strict=True))
    if consuming:
        components["consumer"] = consumer_health(runtime)
    components["settings"] = settings_component(runtime.settings)
    report = HealthReport.of(SERVICE, components)
    return JSONResponse(report.model_dump(mode="json"), status_code=503 if report.status == "unhealthy" else 200)


async def database_health(runtime: Runtime) -> ComponentHealth:
    detail = describe_database(runtime.database_url) | {"revision": None, "head": runtime.schema_head}
    try:
        async with asyncio.timeout(runtime.settings.artifacts_db_timeout_seconds):
            revision = await database_revision(runtime.engine, VERSION_TABLE)
            detail["server"] = await connected_server(runtime.engine)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return ComponentHealth(status="unhealthy", detail=detail, error=f"database unreachable: {reason}")
    detail["revision"] = revision
    if revision != runtime.schema_head:
        return ComponentHealth(
            status="unhealthy",
            detail=detail,
            error=f"schema is at revision {revision or '<none>'} but this code needs {runtime.schema_head}",
        )
    return ComponentHealth(status="ok", detail=detail)


async def store_health(runtime: Runtime) -> ComponentHealth:
    return ComponentHealth(status="ok", detail=await runtime.store.health())


def consumer_health(runtime: Runtime) -> ComponentHealth:
    consumer = runtime.consumer
    if consumer is None:
        return ComponentHealth(
            status="unhealthy",
            detail={"running": False, "group_id": runtime.settings.artifacts_consumer_group_id},
            error="the consumer has stopped",
        )
    stats = consumer.stats
    detail = {
        "running": consumer.running,
        "group_id": consumer.group_id,
        "topics": list(CONSUMED_TOPICS),
        "assigned_partitions": stats.assigned,
        "started_at": stats.started_at,
        "last_batch_at": stats.last_batch_at,
        "batches": stats.batches,
        "events_stored": stats.events_stored,
        "duplicates_skipped": stats.duplicates,
        "dead_lettered": stats.dead_lettered,
        "last_error": stats.last_error,
        "last_error_at": stats.last_error_at,
    }
    detail = {key: value.isoformat() if hasattr(value, "isoformat") else value for key, value in detail.items()}
    if not consumer.running:
        return ComponentHealth(status="unhealthy", detail=detail, error="the consumer is not running")
    failing = stats.last_error_at is not None and (
        stats.last_batch_at is None or stats.last_error_at > stats.last_batch_at
    )
    if failing:
        return ComponentHealth(status="degraded", detail=detail, error=stats.last_error)
    return ComponentHealth(status="ok", detail=detail)
