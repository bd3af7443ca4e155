"""ASGI middleware every service puts in front of its routes: bounded request bodies
and mutations that a browser on another site cannot send.

- A body over `max_body_bytes` is refused with 413: at once when `Content-Length`
  says so, otherwise as soon as the bytes read go past it (the body is streamed, never
  held whole here).
- GET and HEAD carry no body (400), where a route takes them; elsewhere the router's
  405 (with Allow) comes first.
- POST, PUT, PATCH and DELETE take only `application/json` (415 otherwise): a
  cross-site HTML form cannot send that without a CORS preflight, which no ibflow
  service grants.
- A mutating request whose `Origin` (or, without one, `Referer`) is not an allowed
  origin is refused with 403, whether or not a token is set. Requests that carry
  neither header do not come from a browser (curl, the CLI, the gateway) and pass.
  The services behind the gateway allow no browser origin at all; the gateway allows
  its own (services/gateway/security.py).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http import error_body, path_methods

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODYLESS_METHODS = frozenset({"GET", "HEAD"})

OriginCheck = Callable[[Scope, str], bool]


def no_browser_origin(scope: Scope, origin: str) -> bool:
    return False


def route_takes_method(scope: Scope) -> bool:
    """Whether the app documents this method at this path (else the router answers, 405 or 404)."""
    return scope["method"] in (path_methods(scope["app"].openapi(), scope["path"]) or ())


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit} bytes")


def refusal(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status)


def request_origin(headers: Headers) -> str | None:
    """The origin a browser says the request comes from: `Origin`, else the origin of `Referer`."""
    if (origin := headers.get("origin")) is not None:
        return origin.strip()
    if referer := headers.get("referer"):
        parts = urlsplit(referer.strip())
        return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "null"
    return None


def has_body(headers: Headers) -> bool:
    length = headers.get("content-length", "").strip()
    return (length.isdigit() and int(length) > 0) or "chunked" in headers.get("transfer-encoding", "").lower()


def is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


class RequestGuard:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        origin_allowed: OriginCheck = no_browser_origin,
        refuses_get_body: Callable[[Scope], bool] = route_takes_method,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.origin_allowed = origin_allowed
        self.refuses_get_body = refuses_get_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (problem := self.problem(scope)) is not None:
            await problem(scope, receive, send)
            return
        await self.app(scope, self._bounded(receive), send)

    def problem(self, scope: Scope) -> JSONResponse | None:
        headers = Headers(scope=scope)
        method = scope["method"]
        length = headers.get("content-length")
        if length is not None and not length.strip().isdigit():
            return refusal(400, "Content-Length is not a number")
        carries_body = has_body(headers)
        if method in BODYLESS_METHODS and carries_body and self.refuses_get_body(scope):
            return refusal(400, f"a {method} request carries no body")
        if length is not None and int(length) > self.max_body_bytes:
            return refusal(413, f"request body of {int(length)} bytes is over the limit of {self.max_body_bytes} bytes")
        if method not in MUTATING_METHODS:
            return None
        origin = request_origin(headers)
        if origin is not None and not self.origin_allowed(scope, origin):
            return refusal(403, f"cross-site request refused: origin {origin!r} is not allowed to change anything here")
        content_type = headers.get("content-type")
        if (content_type is not None or carries_body) and not is_json(content_type or ""):
            return refusal(415, f"{method} takes application/json, not {content_type or 'a body without a type'}")
        return None

    def _bounded(self, receive: Receive) -> Receive:
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        return bounded_receive
