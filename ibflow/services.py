"""The four services: how each is started and where it listens by default."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    app_factory: str
    port_env: str
    default_port: int
    url_env: str

    @property
    def port(self) -> int:
        return int(os.environ.get(self.port_env, self.default_port))

    def url(self, host: str = "127.0.0.1") -> str:
        return os.environ.get(self.url_env) or f"http://{host}:{self.port}"


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec("artifacts", "services.artifacts.main:create_app", "ARTIFACTS_PORT", 8001, "ARTIFACTS_URL"),
        ServiceSpec("scheduler", "services.scheduler.main:create_app", "SCHEDULER_PORT", 8002, "SCHEDULER_URL"),
        ServiceSpec("signals", "services.signals.main:create_app", "SIGNALS_PORT", 8003, "SIGNALS_URL"),
        ServiceSpec("gateway", "services.gateway.main:create_app", "GATEWAY_PORT", 8000, "GATEWAY_URL"),
    )
}
# Migrations of the services that keep state, in the order they run: each module has
# `migrate(database_url, target="head")` and `status(database_url)`.
MIGRATIONS = {
    "artifacts": "services.artifacts.migrate",
    "scheduler": "services.scheduler.migrate",
}
