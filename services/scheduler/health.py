"""`/health`: the database (where, and schema revision vs head), the broker, the loop."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from services.scheduler.rows import VERSION_TABLE
from services.scheduler.runtime import SchedulerRuntime
from shared.database import database_revision, describe_database, head_revision
from shared.database_identity import connected_server
from shared.health import ComponentHealth, HealthReport
from shared.kafka import probe_broker
from shared.settings_report import settings_component

SERVICE = "scheduler"
DATABASE_TIMEOUT_SECONDS = 3.0
# The loop is late when it has not ticked for this many tick intervals (at least 10 s).
LATE_TICKS = 5


async def database_health(runtime: SchedulerRuntime) -> ComponentHealth:
    detail = describe_database(runtime.database_url) | {"version_table": VERSION_TABLE}
    head = head_revision(runtime.alembic)
    detail["head"] = head
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS):
            revision = await database_revision(runtime.engine, VERSION_TABLE)
            detail["server"] = await connected_server(runtime.engine)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        return ComponentHealth(status="unhealthy", detail=detail, error=f"database unreachable: {type(exc).__name__}")
    detail["revision"] = revision
    if revision != head:
        return ComponentHealth(
            status="unhealthy", detail=detail,
            error=f"schema at revision {revision or '<none>'} but the code needs {head}; run `ibflow migrate`",
        )
    return ComponentHealth(status="ok", detail=detail)


def loop_health(runtime: SchedulerRuntime) -> ComponentHealth:
    loop = runtime.loop
    detail = {
        "instance_id": runtime.settings.scheduler_instance_id,
        "tick_seconds": loop.tick_seconds,
        "last_tick_at": loop.last_tick_at.isoformat() if loop.last_tick_at else None,
    }
    task = runtime.loop_task
    if task is None or task.done():
        return ComponentHealth(status="unhealthy", detail=detail, error="the scheduling loop is not running")
    if loop.last_error is not None:
        return ComponentHealth(status="unhealthy", detail=detail, error=f"last tick failed: {loop.last_error}")
    late = timedelta(seconds=max(10.0, LATE_TICKS * loop.tick_seconds))
    if loop.last_tick_at is None or runtime.clock.now() - loop.last_tick_at > late:
        return ComponentHealth(status="degraded", detail=detail, error="the scheduling loop has not ticked recently")
    return ComponentHealth(status="ok", detail=detail)


async def scheduler_health(runtime: SchedulerRuntime) -> HealthReport:
    database, broker = await asyncio.gather(database_health(runtime), probe_broker(runtime.settings))
    return HealthReport.of(SERVICE, {"database": database, "broker": broker, "loop": loop_health(runtime),
                                     "settings": settings_component(runtime.settings)})
