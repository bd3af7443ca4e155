"""What the gateway does to every request and response before any route sees them,
because it is the one surface a browser reaches:

- `Host` must name this gateway: 127.0.0.1, ::1, localhost and `*.localhost`, a name
  of one label (`gateway`, as containers call it: no one outside the network decides
  what those resolve to), or a name in `IBFLOW_ALLOWED_HOSTS`. A page on another site
  that re-points its own DNS name at 127.0.0.1 (DNS rebinding) gets a 400, not the API.
  `/health` and `/metrics` answer any host: probes and scrapers call by address, and
  neither changes anything.
- Bodies are bounded and mutations are JSON from this gateway's own origin or one in
  `IBFLOW_ALLOWED_ORIGINS` (shared/request_guard.py), token or no token.
- Every response says it may not be framed (`X-Frame-Options`, `frame-ancestors`) or
  sniffed, sends no full URL to other sites, and every HTML page gets a
  Content-Security-Policy without inline script: the pages load their script from
  /static only.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.request_guard import RequestGuard, refusal, route_takes_method

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
ANY_HOST_PATHS = frozenset({"/health", "/metrics"})
_ONE_LABEL = re.compile(r"[a-z]([a-z0-9-]*[a-z0-9])?")
DEFAULT_PORTS = {"http": 80, "https": 443}

# The pages' own script and styles from /static; `style-src-attr` lets the progress bars
# set their width, and images may be inline `data:` charts. Nothing else, from nowhere else.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
ALWAYS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def names(setting: str) -> frozenset[str]:
    """A comma-separated setting as a set of lower-case entries."""
    return frozenset(part.strip().lower().rstrip("/") for part in setting.split(",") if part.strip())


def host_name(host_header: str) -> str:
    """`Host` without its port, lower case: `[::1]:8000` → `::1`, `Example.COM.` → `example.com`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, _, port = host.rpartition(":")
    return (name if name and port.isdigit() else host).rstrip(".")


def normalized_origin(origin: str) -> str:
    """`scheme://host[:port]` with the scheme's default port left out, lower case."""
    parts = urlsplit(origin.strip().lower())
    if not parts.scheme or not parts.hostname:
        return origin.strip().lower()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    try:
        port = parts.port
    except ValueError:
        return origin.strip().lower()
    if port is None or port == DEFAULT_PORTS.get(parts.scheme):
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def refuses_get_body(scope: Scope) -> bool:
    # The proxy answers /api/ itself: 405 for a method the service lacks first, then this 400.
    return not scope["path"].startswith("/api/") and route_takes_method(scope)


class GatewaySecurity:
    def __init__(self, app: ASGIApp, *, allowed_hosts: str = "", allowed_origins: str = "",
                 max_body_bytes: int) -> None:
        self.app = RequestGuard(app, max_body_bytes=max_body_bytes, origin_allowed=self.origin_allowed,
                                refuses_get_body=refuses_get_body)
        configured = names(allowed_hosts)
        self.any_host = "*" in configured
        self.allowed_hosts = LOOPBACK_HOSTS | configured
        self.allowed_origins = frozenset(normalized_origin(origin) for origin in names(allowed_origins))

    def host_allowed(self, host_header: str | None) -> bool:
        if self.any_host:
            return True
        if not host_header:
            return False
        host = host_name(host_header)
        return (host in self.allowed_hosts or host.endswith(".localhost") or _ONE_LABEL.fullmatch(host) is not None
                or any(entry.startswith("*.") and host.endswith(entry[1:]) for entry in self.allowed_hosts))

    def origin_allowed(self, scope: Scope, origin: str) -> bool:
        """The gateway's own origin (as the browser addressed it), or a configured one."""
        own = normalized_origin(f"{scope.get('scheme', 'http')}://{Headers(scope=scope).get('host', '')}")
        return normalized_origin(origin) in self.allowed_origins | {own}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = with_security_headers(send)
        host = Headers(scope=scope).get("host")
        if scope["path"] not in ANY_HOST_PATHS and not self.host_allowed(host):
            message = f"unknown host {(host or '')[:100]!r}: add it to IBFLOW_ALLOWED_HOSTS to serve it"
            await refusal(400, message)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def with_security_headers(send: Send) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in ALWAYS.items():
                headers.setdefault(name, value)
            if headers.get("content-type", "").startswith("text/html"):
                # Proxied artifact content keeps its own `sandbox` policy.
                headers.setdefault("content-security-policy", PAGE_CSP)
        await send(message)

    return send_with_headers
