"""The artifacts service's app factory: `uvicorn --factory services.artifacts.main:create_app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.artifacts import metrics
from services.artifacts.api import artifacts, health, logs, runs
from services.artifacts.runtime import start_runtime
from services.artifacts.settings import ArtifactsSettings
from shared.http import install_error_handlers
from shared.json_logging import configure_logging
from shared.metrics import install_metrics, observe_lag, observe_pool
from shared.request_guard import RequestGuard
from shared.startup import Startup, StartupGate, configuration
from shared.tracing import install_tracing


def create_app(settings: ArtifactsSettings | None = None) -> FastAPI:
    """Without `settings` (uvicorn's factory call) this is the service's own process: a
    start-up that fails for good ends it. With them, `app.state.startup` reports it."""
    own_process = settings is None
    with configuration(health.SERVICE, exit_on_error=own_process):
        settings = settings or ArtifactsSettings()
    configure_logging(health.SERVICE, settings.log_level)
    # Every schema check (start-up, each /health) would log Alembic's context lines.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    startup = Startup(health.SERVICE, exit_on_failure=own_process)

    async def start() -> None:
        # Refuses to start (SchemaMismatchError naming both revisions) unless the
        # database is at the code's Alembic head.
        app.state.runtime = await start_runtime(settings, startup)
        # Stored runs, artifacts and logs are readable while the consumer waits for the broker.
        startup.open_for_requests()
        app.state.runtime.start_retention()
        if settings.artifacts_consumer_enabled:
            await app.state.runtime.start_consuming(startup)

    async def stop() -> None:
        if app.state.runtime is not None:
            await app.state.runtime.close()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # HTTP is served once this yields: the slow part runs behind `/health`'s `starting`.
        startup.begin(start, cleanup=stop)
        try:
            yield
        finally:
            await startup.stop()
            await stop()

    app = FastAPI(
        title="ibflow artifacts",
        description="Runs, steps, artifacts and log records of every ibflow run.",
        version="1",
        lifespan=lifespan,
    )
    app.state.runtime = None
    app.state.startup = startup
    app.add_middleware(StartupGate, startup=startup)
    app.add_middleware(RequestGuard, max_body_bytes=settings.http_max_body_bytes)
    install_metrics(app, refresh=[lambda: _refresh_metrics(app, settings.artifacts_consumer_group_id)])
    install_tracing(app, health.SERVICE)
    install_error_handlers(app)
    app.include_router(artifacts.router)
    app.include_router(runs.router)
    app.include_router(logs.router)
    app.include_router(health.router)
    return app


async def _refresh_metrics(app: FastAPI, group_id: str) -> None:
    runtime = app.state.runtime
    if runtime is None:
        return  # still starting: nothing to read yet
    observe_pool(runtime.engine)
    observe_lag(group_id, runtime.consumer.kafka_client if runtime.consumer is not None else None)
    await metrics.refresh_runs_by_status(runtime.sessions)
