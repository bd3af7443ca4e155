"""HTTP plumbing shared by the services: bearer auth for mutations, JSON errors and how
the OpenAPI documents describe them, a loopback server."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


def bearer_auth(token: SecretStr | None):
    """A dependency that requires `Authorization: Bearer <token>` when a token is set."""

    async def require_token(request: Request) -> None:
        if token is None or not token.get_secret_value():
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Bytes, not text: compare_digest refuses non-ASCII str, and a header may hold any byte.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), token.get_secret_value().encode()
        ):
            raise HTTPException(
                status_code=401,
                detail="this endpoint needs 'Authorization: Bearer <IBFLOW_API_TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_token


class ErrorBody(BaseModel):
    """Every error response of every ibflow service."""

    error: str = Field(description="what went wrong, in words")
    status: int = Field(description="the HTTP status, repeated")
    details: Any = Field(default=None, description="structured detail where there is some (which fields were invalid...)")


ERROR_DESCRIPTIONS = {
    400: "the request cannot be read: a body on GET or HEAD, a body that is not UTF-8",
    401: "a mutating endpoint without 'Authorization: Bearer <IBFLOW_API_TOKEN>' (only when the token is set)",
    403: "a cross-site request: its Origin or Referer is not an allowed origin",
    404: "no such resource",
    409: "the resource is in a state that does not allow this",
    413: "the request body is over the size limit",
    415: "the body is not application/json",
    422: "invalid parameters or body; `details` names each problem",
    429: "too many requests of this kind at once; try again later",
    503: "the service is starting, or its database is unavailable",
}


def error_responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the JSON error body. `descriptions`
    (`e404="no such run"`) replace the generic words."""
    return {
        code: {"model": ErrorBody, "description": descriptions.get(f"e{code}") or ERROR_DESCRIPTIONS[code]}
        for code in codes
    }


HTTP_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


def path_methods(document: dict[str, Any], path: str) -> frozenset[str] | None:
    """The methods an OpenAPI document gives `path` (upper case, HEAD with GET), or None
    when no documented path matches it."""
    methods: set[str] | None = None
    for template, item in document.get("paths", {}).items():
        if _template_pattern(template).fullmatch(path):
            methods = (methods or set()) | {method.upper() for method in item if method in HTTP_METHODS}
    if methods and "GET" in methods:
        methods.add("HEAD")
    return None if methods is None else frozenset(methods)


@lru_cache(maxsize=512)
def _template_pattern(template: str) -> re.Pattern[str]:
    """`/api/runs/{execution_id}` as a pattern of the paths it stands for (one segment per parameter)."""
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)))


def error_body(status: int, message: str, details: object = None) -> dict:
    body: dict = {"error": message, "status": status}
    if details is not None:
        body["details"] = details
    return body


def install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON with a readable `error` message, and the OpenAPI document says so."""
    document_errors(app)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        details = None if isinstance(exc.detail, str) else exc.detail
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405 and exc.detail == "Method Not Allowed":
            # The router's own 405 names the methods of the first route at the path; a path can
            # have several, and the document names them all.
            if documented := path_methods(request.app.openapi(), request.url.path):
                headers["Allow"] = ", ".join(sorted(documented))
            message = f"{request.method} is not allowed here; allowed: {headers.get('Allow', 'none')}"
        return JSONResponse(error_body(exc.status_code, message, details), status_code=exc.status_code,
                            headers=headers or None)

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


_BODY_METHODS = ("post", "put", "patch")
_BODY_ERRORS = (413, 415)


def document_errors(app: FastAPI) -> None:
    """The app's OpenAPI document with the errors its requests can really get: the
    validation error in ibflow's shape (not FastAPI's), 400 for a body that cannot be
    read (or is on a GET), 413 and 415 on operations that take a body, and 503 while the
    service starts or its database is away.

    Optional parameters lose the `null` FastAPI gives them: a query parameter or a header
    is sent or left out, it cannot be null (`Last-Event-ID: null` is not a number)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        # Services behind a start-up gate (shared/startup.py) answer 503 to everything until ready.
        gated = getattr(app.state, "startup", None) is not None
        for item in document.get("paths", {}).values():
            for method, operation in item.items():
                for parameter in operation.get("parameters", []):
                    parameter["schema"] = _without_null(parameter.get("schema", {}))
                responses = operation.setdefault("responses", {})
                codes = {"400"} | {"422"} & responses.keys() | ({"503"} if gated else set())
                if method in _BODY_METHODS:
                    codes |= {str(code) for code in _BODY_ERRORS}
                for code in codes:
                    if code not in responses or _is_fastapi_default(responses[code]):
                        responses[code] = _error_response(int(code))
        app.openapi_schema = document
        return document

    app.openapi = openapi


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    options = schema.get("anyOf")
    if not options or {"type": "null"} not in options:
        return schema
    rest = [option for option in options if option != {"type": "null"}]
    merged = {key: value for key, value in schema.items() if key != "anyOf"} | (
        rest[0] if len(rest) == 1 else {"anyOf": rest}
    )
    descriptions = [d for d in (schema.get("description"), merged.get("description")) if d]
    if descriptions:
        merged["description"] = "; ".join(dict.fromkeys(descriptions))
    return merged


def _is_fastapi_default(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").endswith("/HTTPValidationError")


def _error_response(code: int) -> dict[str, Any]:
    return {
        "description": ERROR_DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


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
