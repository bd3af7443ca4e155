"""The scheduler service: `create_app` wires settings, database, broker, loop and API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from services.scheduler import trading_calendar

from services.scheduler.api import build_router
from services.scheduler.clock import Clock, SystemClock
from services.scheduler.cron import ScheduleError
from services.scheduler.health import SERVICE, scheduler_health
from services.scheduler.migrate import scheduler_alembic_config
from services.scheduler.outbox import RunRequestOutbox
from services.scheduler.publisher import KafkaRunPublisher
from services.scheduler.rows import VERSION_TABLE
from services.scheduler.run_events import subscribe_run_events
from services.scheduler.runtime import SchedulerRuntime
from services.scheduler.schedules import seed_default_schedule
from services.scheduler.scheduling_loop import SchedulingLoop
from services.scheduler.settings import SchedulerSettings
from shared.database import SchemaMismatchError, normalize_database_url, require_schema_at_head
from shared.health import HealthReport
from shared.http import bearer_auth, error_body, install_error_handlers
from shared.kafka import ensure_topics, new_broker

log = logging.getLogger(__name__)


def create_app(settings: SchedulerSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or SchedulerSettings()
    clock = clock or SystemClock()
    database_url = normalize_database_url(settings.database_url.get_secret_value())
    engine = create_async_engine(database_url, pool_pre_ping=True)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    broker = new_broker(settings, client_id=f"ibflow-scheduler-{settings.scheduler_instance_id}")
    outbox = RunRequestOutbox(
        sessions, KafkaRunPublisher(broker), clock,
        instance_id=settings.scheduler_instance_id,
        lease=timedelta(seconds=settings.scheduler_publish_lease_seconds),
    )
    loop = SchedulingLoop(
        sessions, outbox, clock,
        instance_id=settings.scheduler_instance_id,
        tick_seconds=settings.scheduler_tick_seconds,
        misfire_grace=timedelta(seconds=settings.scheduler_misfire_grace_seconds),
        active_run_timeout=timedelta(seconds=settings.scheduler_active_run_timeout_seconds),
        max_lookback=timedelta(seconds=settings.scheduler_max_lookback_seconds),
    )
    runtime = SchedulerRuntime(
        settings=settings, database_url=database_url, engine=engine, sessions=sessions,
        alembic=scheduler_alembic_config(database_url), clock=clock, broker=broker, outbox=outbox, loop=loop,
    )
    subscribe_run_events(broker, settings, sessions, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await _start(runtime)
            yield
        finally:
            await _stop(runtime)

    app = FastAPI(
        title="ibflow scheduler",
        description="Schedules as data: cron slots on trading days, fired exactly once, each one in the ledger.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)

    @app.exception_handler(SQLAlchemyError)
    async def _database_unavailable(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.error("database error while serving a request", exc_info=exc)
        return JSONResponse(error_body(503, f"the scheduler's database is unavailable ({type(exc).__name__})"),
                            status_code=503)

    app.include_router(build_router(bearer_auth(settings.ibflow_api_token)))

    @app.get("/health", response_model=HealthReport, tags=["health"])
    async def health() -> HealthReport:
        return await scheduler_health(runtime)

    return app


async def _start(runtime: SchedulerRuntime) -> None:
    settings = runtime.settings
    try:
        current, head = await require_schema_at_head(runtime.engine, runtime.alembic, VERSION_TABLE)
    except SchemaMismatchError as exc:
        log.error("refusing to start: %s", exc, extra={"database": runtime.database_url.render_as_string()})
        raise
    log.info("database schema at head", extra={"revision": current, "head": head})
    try:
        await seed_default_schedule(
            runtime.sessions, cron=settings.workflow_schedule, timezone=settings.workflow_timezone,
            symbols=settings.watchlist_symbols(), now=runtime.clock.now(),
        )
    except ScheduleError as exc:
        log.error("refusing to start: %s", exc)
        raise
    await ensure_topics(settings)
    await runtime.broker.start()
    # building an exchange calendar takes a moment: not on the event loop's time
    await asyncio.to_thread(
        trading_calendar.is_trading_day, trading_calendar.DEFAULT_CALENDAR, runtime.clock.now().date()
    )
    runtime.loop_task = asyncio.create_task(runtime.loop.run(), name=f"{SERVICE}-loop")


async def _stop(runtime: SchedulerRuntime) -> None:
    if runtime.loop_task is not None:
        runtime.loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runtime.loop_task
    await runtime.broker.stop()
    await runtime.engine.dispose()
