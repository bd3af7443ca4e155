"""`/api/*` forwarded to the owning service: method, path, query, body and the headers
that matter. The request body is streamed to the service as it arrives (its size is
bounded by services/gateway/security.py), and the response streamed back the same way
(artifact content, log streams).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, HTTPException, Request
from starlette.responses import Response, StreamingResponse

from services.gateway.downstream import Downstream, DownstreamUnavailable, Services
from shared.http import path_methods
from shared.request_guard import BODYLESS_METHODS, has_body
from shared.tracing import inject

log = logging.getLogger(__name__)

FORWARDED_REQUEST_HEADERS = (
    "authorization", "content-type", "accept", "last-event-id",
    "if-none-match", "if-modified-since", "range", "x-request-id",
)
FORWARDED_RESPONSE_HEADERS = (
    "content-type", "content-length", "content-disposition", "content-range", "accept-ranges",
    "cache-control", "etag", "last-modified", "location", "www-authenticate", "retry-after",
    "x-accel-buffering", "x-request-id", "allow",
)
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Answers up to this size are read whole and sent in one piece; larger ones, and any
# without a length, stream through.
WHOLE_BODY_BYTES = 256 * 1024

router = APIRouter()


@router.api_route(
    "/api/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
async def forward(request: Request) -> Response:
    """In this order: a method nobody takes at the path is a 405 (with Allow) for everyone,
    as a service would answer; a GET or HEAD with a body is a 400 before any byte of it is
    read; only then does a mutation need the token."""
    services: Services = request.app.state.services
    if own := path_methods(request.app.openapi(), request.url.path):  # the gateway's own (`/api/`, a scorecard)
        raise _not_allowed(request, own)
    service = services.owner(request.url.path)
    if service is None:
        raise HTTPException(404, f"no API at {request.url.path}; see /docs")
    allowed = await request.app.state.openapi.methods_at(service, request.url.path)
    if allowed is not None and request.method not in allowed:
        raise _not_allowed(request, allowed)
    if request.method in BODYLESS_METHODS and has_body(request.headers):
        raise HTTPException(400, f"a {request.method} request carries no body")
    if request.method in MUTATING_METHODS:
        await request.app.state.require_token(request)
    return await relay(services.client, service, request)


def _not_allowed(request: Request, allowed: set[str] | frozenset[str]) -> HTTPException:
    return HTTPException(405, f"{request.method} is not allowed on {request.url.path}",
                         headers={"Allow": ", ".join(sorted(allowed))})


async def relay(client: httpx.AsyncClient, service: Downstream, request: Request) -> Response:
    headers = {name: value for name in FORWARDED_REQUEST_HEADERS if (value := request.headers.get(name))}
    # the gateway's request span is the parent of the service's: one trace from the client on
    inject(headers)
    content = None
    if has_body(request.headers):
        # Passed on chunk by chunk, never held whole; with its length when the client gave one.
        length = request.headers.get("content-length")
        headers |= {"content-length": length} if length else {}
        content = request.stream()
    streaming = "text/event-stream" in request.headers.get("accept", "") or request.url.path.endswith("/stream")
    # The raw path and query, so percent-escapes reach the service exactly as sent.
    target = request.scope.get("raw_path") or request.url.path.encode()
    if query := request.scope.get("query_string"):
        target += b"?" + query
    base = httpx.URL(service.base_url)
    upstream_request = client.build_request(
        request.method,
        base.copy_with(raw_path=base.raw_path.rstrip(b"/") + target),
        headers=headers,
        content=content,
        # A live log stream is quiet while the run is; only connecting is bounded then.
        timeout=httpx.Timeout(None, connect=client.timeout.connect) if streaming else client.timeout,
    )
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.HTTPError as exc:
        raise DownstreamUnavailable(service, exc) from exc
    if not streaming and _declared_length(upstream) <= WHOLE_BODY_BYTES:
        # Most answers are a page of JSON: passed on as one piece, without the task that
        # a streamed response keeps listening for the client's disconnect.
        try:
            body = await upstream.aread()
        except httpx.HTTPError as exc:
            raise DownstreamUnavailable(service, exc) from exc
        finally:
            await upstream.aclose()
        return Response(body, status_code=upstream.status_code, headers=_response_headers(upstream, service))
    return StreamingResponse(
        _body(upstream, service),
        status_code=upstream.status_code,
        headers=_response_headers(upstream, service),
    )


def _declared_length(upstream: httpx.Response) -> int:
    """The body's Content-Length, or more than any whole body when it has none (chunked)."""
    length = upstream.headers.get("content-length", "")
    return int(length) if length.isdigit() and "content-encoding" not in upstream.headers else WHOLE_BODY_BYTES + 1


async def _body(upstream: httpx.Response, service: Downstream) -> AsyncIterator[bytes]:
    try:
        # Decoded bytes: the gateway asks for identity, and drops Content-Encoding if a
        # service compresses all the same.
        async for chunk in upstream.aiter_bytes():
            yield chunk
    except httpx.HTTPError as exc:
        # The status line is already sent: all that can be done is to end the body.
        log.warning("downstream response broke off",
                    extra={"service": service.name, "reason": type(exc).__name__})
    finally:
        await upstream.aclose()


def _response_headers(upstream: httpx.Response, service: Downstream) -> dict[str, str]:
    headers = {name: value for name in FORWARDED_RESPONSE_HEADERS if (value := upstream.headers.get(name))}
    if upstream.headers.get("content-encoding", "identity") != "identity":
        headers.pop("content-length", None)
    location = headers.get("location")
    if location and location.startswith(service.base_url):
        # FastAPI's trailing-slash redirects name the service's own address: keep clients here.
        headers["location"] = location[len(service.base_url):] or "/"
    # Artifact content is untrusted: opened directly it must not run script in this origin.
    headers["content-security-policy"] = "sandbox"
    headers["x-content-type-options"] = "nosniff"
    return headers
