"""HTTP plumbing shared by the services: bearer auth for mutations, JSON errors, a loopback server."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


def bearer_auth(token: SecretStr | None):
    """A dependency that requires `Authorization: Bearer <token>` when a token is set."""

    async def require_token(request: Request) -> None:
        if token is None or not token.get_secret_value():
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token.get_secret_value()):
            raise HTTPException(
                status_code=401,
                detail="this endpoint needs 'Authorization: Bearer <IBFLOW_API_TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_token


def error_body(status: int, message: str, details: object = None) -> dict:
    body: dict = {"error": message, "status": status}
    if details is not None:
        body["details"] = details
    return body


def install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON with a readable `error` message."""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        details = None if isinstance(exc.detail, str) else exc.detail
        return JSONResponse(error_body(exc.status_code, message, details), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path, "method": request.method})
        return JSONResponse(error_body(500, f"internal error ({type(exc).__name__}); see the service log"),
                            status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"where": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]} for err in exc.errors()
        ]
        message = "; ".join(f"{d['where']}: {d['problem']}" for d in details)
        return JSONResponse(error_body(422, f"invalid request: {message}", details), status_code=422)


@asynccontextmanager
async def serving(app) -> AsyncIterator[str]:
    """Serve an ASGI app on a free loopback port for the block; yields its base URL.

    For benchmarks and tests that need a real socket, not an in-memory transport. An
    ibflow service's start-up runs behind its server: this waits for it to be done
    too, and raises what made it fail.
    """
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # the server failed to start: raise its error
                raise RuntimeError("the server stopped before it started")
            await asyncio.sleep(0.02)
        if (startup := getattr(getattr(app, "state", None), "startup", None)) is not None:
            await startup.wait_ready(timeout=120)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
