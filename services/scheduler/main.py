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
from services.scheduler.backfills_api import build_backfills_router
from services.scheduler.clock import Clock, SystemClock
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
from shared.database import describe_database, normalize_database_url, require_schema_at_head
from shared.health import HealthReport
from shared.http import bearer_auth, error_body, install_error_handlers
from shared.kafka import TopicKeeper, ensure_topics, new_broker, start_broker
from shared.metrics import install_metrics, observe_broker_lag, observe_pool
from shared.request_guard import RequestGuard
from shared.startup import Startup, StartupGate, configuration
from shared.tracing import install_tracing

log = logging.getLogger(__name__)


def create_app(settings: SchedulerSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Without `settings` (uvicorn's factory call) this is the service's own process: a
    start-up that fails for good ends it. With them, `app.state.startup` reports it."""
    own_process = settings is None
    with configuration(SERVICE, exit_on_error=own_process):
        settings = settings or SchedulerSettings()
        database_url = normalize_database_url(settings.database_url.get_secret_value())
    clock = clock or SystemClock()
    engine = create_async_engine(database_url, pool_pre_ping=True)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    client_id = f"ibflow-scheduler-{settings.scheduler_instance_id}"
    broker = new_broker(settings, client_id=client_id)
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
    startup = Startup(SERVICE, exit_on_failure=own_process)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # HTTP is served once this yields: the slow part runs behind `/health`'s `starting`.
        startup.begin(lambda: _start(runtime, startup, client_id), cleanup=lambda: _stop(runtime))
        try:
            yield
        finally:
            await startup.stop()
            await _stop(runtime)

    app = FastAPI(
        title="ibflow scheduler",
        description="Schedules as data: cron slots on trading days, fired exactly once, each one in the ledger.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.startup = startup
    app.add_middleware(StartupGate, startup=startup)
    app.add_middleware(RequestGuard, max_body_bytes=settings.http_max_body_bytes)
    install_metrics(app, refresh=[lambda: observe_pool(engine), lambda: observe_broker_lag(broker)])
    install_tracing(app, SERVICE)
    install_error_handlers(app)

    @app.exception_handler(SQLAlchemyError)
    async def _database_unavailable(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.error("database error while serving a request", exc_info=exc)
        return JSONResponse(error_body(503, f"the scheduler's database is unavailable ({type(exc).__name__})"),
                            status_code=503)

    app.include_router(build_router(bearer_auth(settings.ibflow_api_token)))
    app.include_router(build_backfills_router(bearer_auth(settings.ibflow_api_token)))

    @app.get("/health", response_model=HealthReport, tags=["health"], responses={503: {"model": HealthReport}})
    async def health() -> HealthReport | JSONResponse:
        if not startup.ready:
            return startup.health_response()
        return await scheduler_health(runtime)

    return app


async def _start(runtime: SchedulerRuntime, startup: Startup, client_id: str) -> None:
    """Outages of the database or the broker are waited out; a schema that is not at
    head (SchemaMismatchError) or an unusable seed (ScheduleError) fails for good."""
    settings = runtime.settings
    database = describe_database(runtime.database_url)["url"]
    current, head = await startup.retrying(
        f"database schema check at {database}",
        lambda: require_schema_at_head(runtime.engine, runtime.alembic, VERSION_TABLE),
    )
    log.info("database schema at head", extra={"revision": current, "head": head})
    await startup.retrying(
        "seeding the default schedule",
        lambda: seed_default_schedule(
            runtime.sessions, cron=settings.workflow_schedule, timezone=settings.workflow_timezone,
            symbols=settings.watchlist_symbols(), now=runtime.clock.now(),
        ),
    )
    servers = settings.kafka_bootstrap_servers
    await startup.retrying(f"waiting for the broker at {servers}", lambda: ensure_topics(settings))
    runtime.topic_keeper = TopicKeeper(settings).start()
    await startup.retrying(f"starting the producer and consumer on the broker at {servers}",
                           lambda: start_broker(runtime.broker, settings, client_id=client_id))
    startup.step("loading the trading calendar")
    # building an exchange calendar takes a moment: not on the event loop's time
    await asyncio.to_thread(
        trading_calendar.is_trading_day, trading_calendar.DEFAULT_CALENDAR, runtime.clock.now().date()
    )
    runtime.loop_task = asyncio.create_task(runtime.loop.run(), name=f"{SERVICE}-loop")
    runtime.start_retention()


async def _stop(runtime: SchedulerRuntime) -> None:
    """Stops whatever the start-up got to; safe to call again."""
    await runtime.stop_retention()
    if runtime.topic_keeper is not None:
        await runtime.topic_keeper.stop()
        runtime.topic_keeper = None
    if runtime.loop_task is not None:
        runtime.loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runtime.loop_task
        runtime.loop_task = None
    await runtime.broker.stop()
    await runtime.engine.dispose()
