"""Trace context from a trigger to its stored run: W3C `traceparent` over HTTP and in
Kafka record headers, spans through OpenTelemetry, trace and span ids on log lines.

Spans always exist (ids to store and to log), but they leave the process only when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set: then an OTLP/HTTP exporter sends them in the
background. Without it there is no exporter and no background thread: the SDK's
tracer provider without a span processor only hands out ids.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRACEPARENT = "traceparent"
ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
_TRACEPARENT_FORMAT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")

_propagator = TraceContextTextMapPropagator()
tracer = trace.get_tracer("ibflow")


def configure_tracing(service: str) -> None:
    """Once per process (later calls, from apps built in the same process, keep the first)."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"ibflow-{service}"}))
    if os.environ.get(ENDPOINT_VARIABLE, "").strip():
        # Imported only when used: the exporter brings protobuf and an HTTP session.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


# --- carrying context ---------------------------------------------------------------


def inject(carrier: dict[str, str], context: Context | None = None) -> dict[str, str]:
    """Add the current (or given) context's `traceparent` to a header dict."""
    _propagator.inject(carrier, context=context)
    return carrier


def current_traceparent() -> str | None:
    return inject({}).get(TRACEPARENT)


def kafka_headers(traceparent: str | None = None) -> dict[str, str]:
    """Headers for a record: the given traceparent, else the current context's."""
    return {TRACEPARENT: traceparent} if traceparent else inject({})


def context_from_headers(headers: Iterable[tuple[str, bytes | str | None]] | Mapping[str, str] | None) -> Context:
    """The context a Kafka record (header pairs) or HTTP request (a mapping) carries;
    an empty one when it carries none or a malformed one."""
    carrier: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for name, value in pairs:
        if name.lower() == TRACEPARENT and value is not None:
            carrier[TRACEPARENT] = value.decode("latin-1") if isinstance(value, bytes) else value
    return _propagator.extract(carrier)


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 hex) of a well-formed, valid traceparent; None otherwise."""
    match = _TRACEPARENT_FORMAT.match((traceparent or "").strip())
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return match.group(1)


def trace_id_in(headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    for name, value in headers or ():
        if name.lower() == TRACEPARENT and value is not None:
            return trace_id_of(value.decode("latin-1"))
    return None


def current_ids() -> dict[str, str]:
    """`trace_id` and `span_id` of the current span, as log fields; empty without one."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}


# --- spans ----------------------------------------------------------------------------


@contextmanager
def span(name: str, *, parent: Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
         attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A current span, child of `parent` (a context from headers) or of the current one."""
    with tracer.start_as_current_span(name, context=parent, kind=kind, attributes=dict(attributes or {})) as current:
        yield current


def install_tracing(app: ASGIApp, service: str) -> None:
    """Spans for `app`'s requests, and the process's tracer provider if not set yet."""
    configure_tracing(service)
    app.add_middleware(TraceRequests)  # type: ignore[attr-defined]


@contextmanager
def child_span(name: str, *, attributes: Mapping[str, Any] | None = None) -> Iterator[Span | None]:
    """A span under the current one; nothing when no trace is going on (code run
    outside a traced request, as tests call it, starts no trace of its own)."""
    if not trace.get_current_span().get_span_context().is_valid:
        yield None
        return
    with span(name, attributes=attributes) as current:
        yield current


class TraceRequests:
    """ASGI middleware: each HTTP request is a server span, child of the `traceparent`
    the client sent (if any), named after the route template once routing has run."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", ())}
        parent = context_from_headers(headers)
        with tracer.start_as_current_span(scope["method"], context=parent, kind=SpanKind.SERVER) as current:

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    current.set_attribute("http.response.status_code", message["status"])
                await send(message)

            try:
                await self.app(scope, receive, send_status)
            finally:
                template = getattr(scope.get("route"), "path_format", None)
                if template:
                    current.update_name(f"{scope['method']} {template}")
                    current.set_attribute("http.route", template)


class TraceIdsOnLogRecords(logging.Filter):
    """Puts the current span's `trace_id` and `span_id` on every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current_ids().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True
