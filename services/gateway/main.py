"""The gateway: the one public HTTP surface of ibflow.

It forwards `/api/*` to the service that owns the path, aggregates `/health`, serves
the HTTP and event documentation and the web UI. It keeps no state of its own: no
database, no broker connection (the broker is only probed for `/health`).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from services.gateway import api_index, docs, health, pages, proxy, scorecard
from services.gateway.asyncapi import event_contract
from services.gateway.downstream import DownstreamUnavailable, Services, new_client
from services.gateway.openapi import OpenApiDocs
from services.gateway.security import GatewaySecurity
from services.gateway.settings import GatewaySettings
from services.gateway.templating import STATIC_DIR, Templates
from shared.http import bearer_auth, error_body, install_error_handlers
from shared.metrics import install_metrics
from shared.tracing import install_tracing

DESCRIPTION = """\
Runs of trading-signal workflows, with every artifact, step and log line queryable.

Everything under `/api/` is served by the service that owns it (artifacts: `/api/artifacts`,
`/api/runs`; scheduler: `/api/workflows`) through this gateway. Mutating endpoints need
`Authorization: Bearer <IBFLOW_API_TOKEN>` when that variable is set. Errors are JSON:
`{"error": "<message>", "status": N, "details": ...}`. The event contract of the broker
topics is at [/asyncapi](/asyncapi).
"""


def _version() -> str:
    try:
        return version("ibflow")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(
    settings: GatewaySettings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """`transport` replaces the network under the shared client (tests only)."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with new_client(settings, transport) as client:
            services = Services(client, settings)
            app.state.services = services
            app.state.openapi = OpenApiDocs(services, app.openapi, settings.openapi_cache_seconds,
                                            token_required=bool(token and token.get_secret_value()))
            yield

    app = FastAPI(
        title="ibflow API",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs and /openapi.json are the merged documents of the whole API (docs.py).
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    token = settings.ibflow_api_token
    app.state.settings = settings
    app.state.require_token = bearer_auth(token)
    app.state.templates = Templates(token_required=bool(token and token.get_secret_value()))
    app.state.asyncapi = event_contract(settings.kafka_bootstrap_servers, _version())
    app.add_middleware(
        GatewaySecurity, allowed_hosts=settings.ibflow_allowed_hosts, allowed_origins=settings.ibflow_allowed_origins,
        max_body_bytes=settings.http_max_body_bytes,
    )
    # The gateway's own metrics: `/metrics` is never forwarded (the proxy serves `/api/` only).
    install_metrics(app)
    install_tracing(app, "gateway")
    install_error_handlers(app)

    @app.exception_handler(DownstreamUnavailable)
    async def _unavailable(request: Request, exc: DownstreamUnavailable) -> JSONResponse:
        return JSONResponse(error_body(exc.status, exc.message, exc.details), status_code=exc.status)

    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(pages.router)
    app.include_router(api_index.router)  # before the proxy, which owns the rest of /api/
    app.include_router(scorecard.router)  # composes GET /api/workflows/{id}/scorecard, so before the proxy too
    app.include_router(proxy.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
