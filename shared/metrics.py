"""Prometheus plumbing every service shares: `/metrics`, HTTP request metrics, and the
metrics of the pieces that live in `shared/` (the consumer rule, consumer lag, the
database pool).

Each service registers its own metrics in its own `metrics` module; they all live in
the process's default registry, which `/metrics` exposes in the text format. Values
that are cheap to read but live in objects (a pool, a consumer's positions, a grouped
count) are refreshed by the route just before it renders, so they are never stale and
no background task keeps them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# A request whose path no route template matches: one series, whatever the path was.
UNMATCHED = "unmatched"
REFRESH_TIMEOUT_SECONDS = 2.0

# Seconds: from a cached lookup to a slow artifact download or report render.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUEST_DURATION = Histogram(
    "ibflow_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status code.",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
)
CONSUMER_EVENTS = Counter(
    "ibflow_consumer_events_total",
    "Records a consumer finished with, by topic and outcome: handled (taken by the "
    "handler or stored) or dead_lettered.",
    ["consumer", "topic", "outcome"],
)
CONSUMER_LAG = Gauge(
    "ibflow_consumer_lag_records",
    "Records on an assigned partition not yet handed to the consumer: its last known "
    "high watermark minus its position. Absent for a partition whose high watermark the "
    "client does not know yet.",
    ["group", "topic", "partition"],
)
DB_POOL_CONNECTIONS = Gauge(
    "ibflow_db_pool_connections",
    "Database connections of the service's pool: in_use (checked out) or idle.",
    ["state"],
)
DB_POOL_WAITING = Gauge(
    "ibflow_db_pool_waiting",
    "Requests waiting for a connection because the pool is exhausted.",
)

Refresh = Callable[[], Awaitable[None] | None]


def install_metrics(app: FastAPI, *, refresh: Sequence[Refresh] = ()) -> None:
    """Serve `/metrics` and time every request of `app`.

    Call it after the app's other middleware, so that the timing wraps them all (a
    request a start-up gate answers is timed too). `refresh` callables update the
    gauges read from live objects just before each scrape.
    """

    async def metrics() -> Response:
        for update in refresh:
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS):
                    result = update()
                    if result is not None:
                        await result
            except Exception as exc:
                # A scrape shows what it can: the last values of what could not be read.
                log.warning("a metric could not be refreshed", extra={"error": f"{type(exc).__name__}: {exc}"})
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
    app.add_middleware(HttpMetrics)


def route_template(app: ASGIApp, scope: Scope) -> str:
    """The template of the route that served `scope` (`/api/runs/{execution_id}`), never
    the raw path: label values stay as few as the app's routes."""
    route = scope.get("route")
    path_format = getattr(route, "path_format", None)
    if isinstance(path_format, str):
        return path_format
    # A mounted app (static files) sets no route: name the mount.
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        if isinstance(candidate, Mount) and candidate.matches(scope)[0] is Match.FULL:
            return candidate.path_format.rstrip("/") + "/{path}"
    return UNMATCHED


class HttpMetrics:
    """ASGI middleware: request duration by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before it answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            HTTP_REQUEST_DURATION.labels(
                scope["method"], route_template(scope.get("app"), scope), str(status)
            ).observe(time.perf_counter() - started)


def count_events(consumer: str, topic: str, outcome: str, amount: int = 1) -> None:
    if amount:
        CONSUMER_EVENTS.labels(consumer, topic, outcome).inc(amount)


def observe_lag(group: str, consumer: Any) -> None:
    """Set the lag of each partition an aiokafka consumer holds, from what the client
    itself knows (the high watermark of its last fetch, its position); partitions it no
    longer holds, or whose high watermark it does not know, are dropped, not guessed.

    Computed from the client rather than from the broker's end offsets, which some
    Kafka-protocol brokers do not report reliably.
    """
    held: set[tuple[str, str]] = set()
    if consumer is not None:
        for tp, lag in partition_lags(consumer):
            labels = (group, tp.topic, str(tp.partition))
            CONSUMER_LAG.labels(*labels).set(lag)
            held.add((tp.topic, str(tp.partition)))
    for labels in _series(CONSUMER_LAG):
        if labels[0] == group and labels[1:] not in held:
            CONSUMER_LAG.remove(*labels)


def partition_lags(consumer: Any) -> Iterable[tuple[Any, int]]:
    try:
        assignment = consumer._subscription.subscription.assignment
    except AttributeError:  # not subscribed yet, or stopped
        return []
    if assignment is None:
        return []
    lags = []
    for tp in consumer.assignment():
        state = assignment.state_value(tp)
        if state is None or state.highwater is None or not state.has_valid_position:
            continue
        lags.append((tp, max(0, state.highwater - state.position)))
    return lags


def observe_pool(engine: Any) -> None:
    """In-use, idle and waiting connections of a SQLAlchemy (async) engine's pool."""
    pool = getattr(engine, "sync_engine", engine).pool
    checked_out = getattr(pool, "checkedout", None)
    if checked_out is None:
        return  # a pool without a size (NullPool) has nothing to show
    DB_POOL_CONNECTIONS.labels("in_use").set(pool.checkedout())
    DB_POOL_CONNECTIONS.labels("idle").set(pool.checkedin())
    waiting = _pool_waiters(pool)
    if waiting is not None:
        DB_POOL_WAITING.set(waiting)


def _pool_waiters(pool: Any) -> int | None:
    # The async queue pool keeps an asyncio.Queue whose getters are the waiting checkouts;
    # SQLAlchemy has no public count of them, so a version that hides it shows nothing.
    queue = getattr(getattr(pool, "_pool", None), "_queue", None)
    getters = getattr(queue, "_getters", None)
    return None if getters is None else sum(1 for waiter in getters if not waiter.done())


def _series(metric: Any) -> list[tuple[str, ...]]:
    return list(getattr(metric, "_metrics", {}).keys())


def observe_broker_lag(broker: Any) -> None:
    """Lag of every subscriber of a FastStream Kafka broker, by its consumer group."""
    for subscriber in getattr(broker, "subscribers", ()):
        group = getattr(subscriber, "group_id", None)
        if group:
            observe_lag(group, getattr(subscriber, "consumer", None))
