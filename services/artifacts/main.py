"""The artifacts service's app factory: `uvicorn --factory services.artifacts.main:create_app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.artifacts.api import artifacts, health, logs, runs
from services.artifacts.runtime import start_runtime
from services.artifacts.settings import ArtifactsSettings
from shared.http import install_error_handlers
from shared.json_logging import configure_logging


def create_app(settings: ArtifactsSettings | None = None) -> FastAPI:
    settings = settings or ArtifactsSettings()
    configure_logging(health.SERVICE, settings.log_level)
    # Every schema check (start-up, each /health) would log Alembic's context lines.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Refuses to start (SchemaMismatchError naming both revisions) unless the
        # database is at the code's Alembic head.
        app.state.runtime = await start_runtime(settings)
        try:
            yield
        finally:
            await app.state.runtime.close()

    app = FastAPI(
        title="ibflow artifacts",
        description="Runs, steps, artifacts and log records of every ibflow run.",
        version="1",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(artifacts.router)
    app.include_router(runs.router)
    app.include_router(logs.router)
    app.include_router(health.router)
    return app
