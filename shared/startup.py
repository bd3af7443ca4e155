"""Start-up in the background, so that `/health` answers from a service's first second.

uvicorn serves HTTP only once the app's lifespan has yielded, so everything slow
(database schema check, topics, broker, consumers) runs as a task the lifespan
starts. Until it is done `/health` answers `starting` (503) with what it waits for,
and requests that need the database or the broker answer 503 with the same reason.

An outage (the broker or the database not reachable yet) is waited out with backoff
and shown in `/health`. Anything else fails the start-up for good (a schema that is
not at head, a refused idempotent producer, an unusable setting): one ERROR line
saying why, everything started is stopped, and the service's own process exits with
code 3, the code uvicorn gives a failed start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Literal, TypeVar

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.health import ComponentHealth, HealthReport
from shared.http import error_body
from shared.kafka import is_broker_outage

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_CODE = 3
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
# PostgreSQL error classes of a server that is away or not ready yet: connection
# exceptions, insufficient resources, operator intervention (starting up, shutting down).
_DATABASE_OUTAGE_SQLSTATE_CLASSES = {"08", "53", "57"}
# Paths that need neither the database nor the broker.
OPEN_PATHS = frozenset({"/health", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})

State = Literal["starting", "ready", "failed"]


def is_outage(exc: BaseException) -> bool:
    """A failure that waiting can get past: the broker or the database is not there yet."""
    if is_broker_outage(exc):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig or exc
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _DATABASE_OUTAGE_SQLSTATE_CLASSES


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


class Startup:
    """One service's start-up: what it waits for now, and how it ended.

    `exit_on_failure` is for the service's own process; a caller that runs the app
    in-process (tests, embedding) gets the failure from `wait_ready` instead.
    """

    def __init__(self, service: str, *, exit_on_failure: bool) -> None:
        self.service = service
        self.exit_on_failure = exit_on_failure
        self.state: State = "starting"
        self.reason = "the start-up task has not begun"
        self.last_error: str | None = None
        self.attempts = 0
        self.since = datetime.now(UTC)
        # Set as soon as requests can be served, which may be before everything is up
        # (the artifacts API reads stored runs while its consumer waits for the broker).
        self.serving_requests = False
        self.failure: BaseException | None = None
        self._done = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._cleanup: Callable[[], Awaitable[None]] | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def begin(self, start: Callable[[], Awaitable[None]], *, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run `start` in the background; `cleanup` stops whatever it got to, when it fails."""
        self._cleanup = cleanup
        self._task = asyncio.create_task(self._run(start), name=f"{self.service}-startup")

    async def _run(self, start: Callable[[], Awaitable[None]]) -> None:
        began = time.monotonic()
        try:
            await start()
        except Exception as exc:
            await self._fail(exc)
            return
        self.state, self.reason, self.last_error = "ready", "ready", None
        self.serving_requests = True
        self._done.set()
        log.info("%s is ready", self.service, extra={"startup_seconds": round(time.monotonic() - began, 3)})

    async def _fail(self, exc: Exception) -> None:
        self.state, self.failure = "failed", exc
        self.serving_requests = False  # what served them is being stopped
        self.reason = f"start-up failed: {describe(exc)}"
        log.error("%s cannot start: %s", self.service, exc,
                  extra={"startup": "failed", "error_type": type(exc).__name__})
        if self._cleanup is not None:
            try:
                await self._cleanup()
            except Exception:
                log.exception("stopping what had started failed")
        self._done.set()
        if self.exit_on_failure:
            _exit_process()

    def step(self, reason: str) -> None:
        """Say what the start-up does now (shown by `/health` until it is done)."""
        self.reason, self.last_error = reason, None
        log.info("start-up: %s", reason)

    def open_for_requests(self) -> None:
        self.serving_requests = True

    async def retrying(self, reason: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt` until it succeeds, waiting out outages with backoff; anything else
        raises. `attempt` must leave nothing open when it fails."""
        self.step(reason)
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self.attempts += 1
                self.last_error = describe(exc)
                log.warning("%s: not yet (%s); trying again in %.1fs", reason, self.last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Until the start-up is done; raises what made it fail."""
        async with asyncio.timeout(timeout):
            await self._done.wait()
        if self.failure is not None:
            raise self.failure

    async def stop(self) -> None:
        """Cancel a start-up still running (the lifespan's cleanup stops what it started)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def component(self) -> ComponentHealth:
        status = {"starting": "starting", "ready": "ok", "failed": "unhealthy"}[self.state]
        detail = {"state": self.state, "reason": self.reason, "since": self.since.isoformat(),
                  "attempts": self.attempts, "last_error": self.last_error}
        error = None if self.ready else self.reason + (f" ({self.last_error})" if self.last_error else "")
        return ComponentHealth(status=status, detail=detail, error=error)

    def health_response(self) -> JSONResponse:
        """`/health` while not ready: 503, so that probes and load balancers wait."""
        report = HealthReport.of(self.service, {"startup": self.component()})
        return JSONResponse(report.model_dump(mode="json"), status_code=503, headers={"Retry-After": "2"})

    def not_ready_response(self) -> JSONResponse:
        what = "cannot start" if self.state == "failed" else "is starting"
        component = self.component()
        return JSONResponse(
            error_body(503, f"the {self.service} service {what}: {component.error}", component.detail),
            status_code=503, headers={"Retry-After": "2"},
        )


def _exit_process() -> None:
    """End the service's process with EXIT_CODE once its start-up failed for good.

    uvicorn gives an app no way to ask for a non-zero exit after start-up, so this
    leaves the hard way, after everything the start-up opened has been stopped.
    """
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_CODE)


class StartupGate:
    """ASGI middleware: until the service serves requests, every request but the open
    paths answers 503 with the start-up's reason instead of waiting on a pool or a
    broker that is not there."""

    def __init__(self, app: ASGIApp, startup: Startup, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app = app
        self.startup = startup
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.startup.serving_requests and scope["path"] not in self.open_paths:
            await self.startup.not_ready_response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


@contextlib.contextmanager
def configuration(service: str, *, exit_on_error: bool) -> Iterator[None]:
    """Around building an app from its settings: in the service's own process an
    unusable setting is one ERROR line and exit code 3, not a traceback."""
    try:
        yield
    except ValueError as exc:  # pydantic's ValidationError is one
        if not exit_on_error:
            raise
        log.error("%s cannot start: invalid configuration: %s", service, _configuration_problem(exc),
                  extra={"startup": "failed", "error_type": type(exc).__name__})
        raise SystemExit(EXIT_CODE) from None


def _configuration_problem(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(
            f"{'.'.join(str(part) for part in error['loc']).upper() or 'settings'}: {error['msg']}"
            for error in errors()
        )
    return str(exc)


@contextlib.asynccontextmanager
async def running(app: FastAPI, timeout: float = 120.0) -> AsyncIterator[FastAPI]:
    """Run an app's lifespan in-process until its start-up is done (tests, embedding);
    raises what made the start-up fail."""
    async with app.router.lifespan_context(app):
        await app.state.startup.wait_ready(timeout)
        yield app
