"""The services behind the gateway, which `/api/` paths each one owns, and how to call them.

One `httpx.AsyncClient` (made in the app's lifespan) carries every call: the proxy's,
the health probes' and the pages'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from services.gateway.settings import GatewaySettings
from shared import bounded_json
from shared.missing_imports import remember_missing

# The gateway forwards these prefixes unchanged to the service that owns them (docs/architecture.md).
API_ROUTES: tuple[tuple[str, str], ...] = (
    ("/api/artifacts", "artifacts"),
    ("/api/runs", "artifacts"),
    ("/api/workflows", "scheduler"),
)


@dataclass(frozen=True)
class Downstream:
    name: str
    base_url: str

    def url(self, path: str) -> str:
        return self.base_url + path


class DownstreamUnavailable(Exception):
    """The service did not answer: refused, timed out, or the connection broke."""

    def __init__(self, service: Downstream, exc: httpx.HTTPError):
        self.service = service
        if isinstance(exc, httpx.TimeoutException):
            self.status, self.reason = 504, "did not answer in time"
        elif isinstance(exc, httpx.ConnectError):
            self.status, self.reason = 503, "connection refused or host unreachable"
        else:
            self.status, self.reason = 502, f"connection failed ({type(exc).__name__})"
        super().__init__(f"{service.name} service unavailable: {self.reason}")

    @property
    def message(self) -> str:
        return f"{self.service.name} service unavailable"

    @property
    def details(self) -> dict[str, str]:
        return {"service": self.service.name, "url": self.service.base_url, "reason": self.reason}


class DownstreamError(Exception):
    """The service answered with an error status; `message` is its own `error` text."""

    def __init__(self, service: Downstream, status: int, message: str, details: Any = None):
        self.service, self.status, self.message, self.details = service, status, message, details
        super().__init__(f"{service.name} answered {status}: {message}")


class Services:
    def __init__(self, client: httpx.AsyncClient, settings: GatewaySettings):
        self.client = client
        self.artifacts = Downstream("artifacts", settings.artifacts_url.rstrip("/"))
        self.scheduler = Downstream("scheduler", settings.scheduler_url.rstrip("/"))
        self.signals = Downstream("signals", settings.signals_url.rstrip("/"))
        self.all = (self.artifacts, self.scheduler, self.signals)
        self._by_name = {s.name: s for s in self.all}

    def owner(self, path: str) -> Downstream | None:
        for prefix, name in API_ROUTES:
            if path == prefix or path.startswith(prefix + "/"):
                return self._by_name[name]
        return None

    def api_owners(self) -> list[Downstream]:
        """The services that serve part of the public API, in route order."""
        names = dict.fromkeys(name for _, name in API_ROUTES)
        return [self._by_name[name] for name in names]

    async def get_json(self, service: Downstream, path: str, *, params: dict[str, Any] | None = None,
                       timeout: float | None = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            response = await self.client.get(
                service.url(path), params=params,
                **({"timeout": timeout} if timeout is not None else {}),
            )
        except httpx.HTTPError as exc:
            raise DownstreamUnavailable(service, exc) from exc
        if response.status_code >= 400:
            raise error_of(service, response)
        try:
            # Bounded: a stored value 5,000 levels deep must not become a RecursionError here.
            return bounded_json.loads(response.content)
        except ValueError:
            raise DownstreamError(service, 502, f"{service.name} answered with something that is not JSON") from None


def error_of(service: Downstream, response: httpx.Response) -> DownstreamError:
    """The service's own error message, from its JSON error body when it has one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return DownstreamError(service, response.status_code, body["error"], body.get("details"))
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return DownstreamError(service, response.status_code, body["detail"])
    return DownstreamError(service, response.status_code, response.reason_phrase or "request failed")


def new_client(settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    remember_missing()
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(
            settings.downstream_read_timeout_seconds, connect=settings.downstream_connect_timeout_seconds
        ),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        follow_redirects=False,
        # Bodies pass through as they are: nothing to decompress between gateway and services.
        headers={"accept-encoding": "identity"},
    )
