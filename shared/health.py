"""The health vocabulary every service answers `/health` with, and the gateway aggregates.

`starting` is a service whose HTTP server is up while its start-up (database schema
check, topics, broker, consumers) still runs in the background: not broken, not ready.
It ranks between `degraded` and `unhealthy`: something that is down outweighs it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["ok", "degraded", "starting", "unhealthy"]
_RANK: dict[str, int] = {"ok": 0, "degraded": 1, "starting": 2, "unhealthy": 3}


class ComponentHealth(BaseModel):
    status: Status
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class HealthReport(BaseModel):
    status: Status
    service: str
    components: dict[str, ComponentHealth] = Field(default_factory=dict)

    @classmethod
    def of(cls, service: str, components: dict[str, ComponentHealth]) -> HealthReport:
        return cls(service=service, status=worst(c.status for c in components.values()), components=components)


def worst(statuses) -> Status:
    return max(statuses, key=_RANK.__getitem__, default="ok")
