"""HTTP request and response bodies of the scheduler API, and the mappings to them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from services.scheduler.catalogue import WorkflowDefinition
from services.scheduler.cron import ScheduleError
from services.scheduler.rows import LedgerEntry, Schedule
from shared.events import RunParams


class ScheduleView(BaseModel):
    cron: str
    timezone: str
    paused: bool
    misfire_policy: Literal["all", "last", "none"]
    misfire_window_seconds: int
    max_active_runs: int | None = Field(description="null: no limit")
    calendar: str | None = Field(description="exchange_calendars code (XNYS = NYSE); null: every day")
    default_params: dict[str, Any]
    updated_at: datetime


class WorkflowView(BaseModel):
    workflow_id: str
    description: str
    steps: list[str]
    schedule: ScheduleView
    next_fire_times: list[str] = Field(description="RFC 3339, UTC; empty while paused")
    next_fire_times_local: list[str] = Field(description="the same instants in the schedule's timezone")


class WorkflowList(BaseModel):
    workflows: list[WorkflowView]


class ScheduleUpdate(BaseModel):
    """A partial update: only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(default=None, examples=["0 9 * * 1-5"])
    timezone: str | None = Field(default=None, examples=["America/New_York"])
    paused: bool | None = None
    misfire_policy: Literal["all", "last", "none"] | None = None
    misfire_window_seconds: int | None = None
    max_active_runs: int | None = Field(default=None, description="null: no limit")
    calendar: str | None = Field(default=None, description="e.g. XNYS; null or 'none': every day")
    default_params: RunParams | None = None

    # Fields for which null means something (no limit, no calendar, no params).
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"max_active_runs", "calendar", "default_params"})

    def changes(self) -> dict[str, Any]:
        sent = self.model_dump(exclude_unset=True)
        for field, value in sent.items():
            if value is None and field not in self.NULLABLE:
                raise ScheduleError(f"{field} cannot be null")
        return sent


class RunRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: RunParams | None = Field(default=None, description="overrides the schedule's default params")


class RunAccepted(BaseModel):
    execution_id: str
    workflow_id: str
    status: Literal["requested"] = "requested"


class LedgerEntryView(BaseModel):
    slot_at: str = Field(description="the slot's nominal time (a manual trigger: when it was requested), RFC 3339 UTC")
    execution_id: str | None
    outcome: str = Field(description="fired, recovered, manual, skipped, queued, deduplicated, publish_failed")
    reason: str | None = Field(description="for skipped and queued: holiday, paused, misfire_policy, max_active_runs")
    detail: str
    trigger: str
    recorded_at: str
    recorded_by: str


class LedgerPage(BaseModel):
    entries: list[LedgerEntryView]
    next_cursor: str | None


def rfc3339_utc(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def schedule_view(row: Schedule) -> ScheduleView:
    return ScheduleView(
        cron=row.cron,
        timezone=row.timezone,
        paused=row.paused,
        misfire_policy=row.misfire_policy,
        misfire_window_seconds=row.misfire_window_seconds,
        max_active_runs=row.max_active_runs,
        calendar=row.calendar,
        default_params=row.default_params,
        updated_at=row.updated_at,
    )


def workflow_view(definition: WorkflowDefinition, row: Schedule, fire_times: list[datetime]) -> WorkflowView:
    zone = ZoneInfo(row.timezone)
    return WorkflowView(
        workflow_id=definition.workflow_id,
        description=definition.description,
        steps=list(definition.steps),
        schedule=schedule_view(row),
        next_fire_times=[rfc3339_utc(t) for t in fire_times],
        next_fire_times_local=[t.astimezone(zone).isoformat() for t in fire_times],
    )


def ledger_entry_view(row: LedgerEntry) -> LedgerEntryView:
    return LedgerEntryView(
        slot_at=rfc3339_utc(row.slot_at),
        execution_id=row.execution_id,
        outcome=row.outcome,
        reason=row.reason,
        detail=row.detail,
        trigger=row.trigger,
        recorded_at=rfc3339_utc(row.recorded_at),
        recorded_by=row.recorded_by,
    )
