"""HTTP request and response bodies of the scheduler API, and the mappings to them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, Strict

from services.scheduler.catalogue import WorkflowDefinition
from services.scheduler.cron import MAX_CRON_LENGTH
from services.scheduler.rows import LedgerEntry, Schedule
from services.scheduler.schedules import MAX_ACTIVE_RUNS, MAX_MISFIRE_WINDOW_SECONDS
from shared.events import RunParams
from shared.http_params import PLAIN_TEXT, whole_number_in


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


def _text(max_length: int) -> Any:
    return Annotated[str, Field(max_length=max_length, pattern=PLAIN_TEXT)]


def _unset() -> Any:
    """The default of a field that may be left out but is never null (None is not
    validated, so only an explicit null is refused)."""
    return Field(default=None, json_schema_extra=lambda schema: schema.pop("default", None))


class ScheduleUpdate(BaseModel):
    """A partial update: only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    cron: _text(MAX_CRON_LENGTH) = _unset()
    timezone: _text(64) = _unset()
    paused: Annotated[bool, Strict()] = _unset()
    misfire_policy: Literal["all", "last", "none"] = _unset()
    misfire_window_seconds: whole_number_in(0, MAX_MISFIRE_WINDOW_SECONDS) = _unset()
    max_active_runs: whole_number_in(1, MAX_ACTIVE_RUNS) | None = Field(default=None, description="null: no limit")
    calendar: _text(32) | None = Field(default=None, description="e.g. XNYS; null or 'none': every day")
    default_params: RunParams | None = None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


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
