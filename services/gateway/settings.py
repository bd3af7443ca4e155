"""Settings of the gateway, built at start-up from the environment / `.env`."""

from __future__ import annotations

from pydantic import Field

from shared.settings import HttpSettings, KafkaSettings


class GatewaySettings(KafkaSettings, HttpSettings):
    gateway_port: int = 8000
    artifacts_url: str = "http://127.0.0.1:8001"
    scheduler_url: str = "http://127.0.0.1:8002"
    signals_url: str = "http://127.0.0.1:8003"
    # /health must answer even when everything behind it hangs, so every probe is bounded.
    # A service's own /health waits up to 5 s for its database, so give it a little more.
    health_timeout_seconds: float = Field(default=6.0, gt=0)
    broker_probe_timeout_seconds: float = Field(default=3.0, gt=0)
    downstream_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    # Per read, not per request: log streams stay open as long as the run lasts.
    downstream_read_timeout_seconds: float = Field(default=30.0, gt=0)
    # Downstream OpenAPI documents are refetched after this long (and after any failure).
    openapi_cache_seconds: float = Field(default=300.0, ge=0)
    # Artifact content larger than this is offered as a download instead of rendered.
    preview_max_bytes: int = Field(default=2_000_000, ge=1)
    # Comma-separated. Host names the gateway answers to besides 127.0.0.1, ::1,
    # localhost, *.localhost and one-label names (`gateway`): the names a reverse proxy
    # or people use for it (`*.example.com` for a domain's names, `*` for any).
    # See services/gateway/security.py.
    ibflow_allowed_hosts: str = ""
    # Comma-separated origins (`https://ibflow.example.com`) allowed to send mutating
    # requests besides the gateway's own, e.g. when TLS ends at a proxy.
    ibflow_allowed_origins: str = ""
