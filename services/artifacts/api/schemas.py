"""HTTP response schemas of the artifacts service (the API contract; see docs/architecture.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

RunStatus = Literal["queued", "running", "succeeded", "partial", "failed", "external", "abandoned"]
StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "external"]
RUN_STATUS_DESCRIPTION = (
    "queued: requested, not started; running: started, no outcome yet; succeeded: the workflow "
    "ended and nothing failed; partial: it ended but some items failed (see failed_items); "
    "failed: it did not end; external: only artifacts or logs of a producer outside ibflow, "
    "which ibflow does not track; abandoned: queued or running with no event for longer than "
    "ARTIFACTS_RUN_ABANDONED_AFTER_SECONDS (its next event revives it)"
)


class ArtifactSummary(BaseModel):
    artifact_id: UUID
    event_id: UUID
    name: str
    kind: str
    media_type: str
    workflow_id: str
    execution_id: str
    step_name: str | None
    dag_id: str | None
    task_id: str | None
    created_at: datetime = Field(description="when the producer made it (the event's occurred_at)")
    stored_at: datetime
    metadata: dict[str, Any]
    uri: str | None
    size_bytes: int | None
    sha256: str | None
    has_inline_payload: bool
    content_url: str


class Artifact(ArtifactSummary):
    payload: Any = Field(description="the inline JSON payload; null for content in the artifact store")


TOTAL_DESCRIPTION = (
    "how many match the filters (all pages): exact up to the service's cap (ARTIFACTS_LIST_TOTAL_CAP, "
    "10,000 by default); when more match, the cap itself, a lower bound, and total_is_exact is false"
)
TOTAL_IS_EXACT_DESCRIPTION = "true: total is the number that match; false: more than total match"


class ArtifactPage(BaseModel):
    artifacts: list[ArtifactSummary]
    total: int = Field(description=TOTAL_DESCRIPTION)
    total_is_exact: bool = Field(description=TOTAL_IS_EXACT_DESCRIPTION)
    limit: int
    next_cursor: str | None


class ExecutionArtifacts(BaseModel):
    workflow_id: str
    execution_id: str
    run_status: RunStatus | None = Field(description="null when no run events of it were stored")
    artifact_count: int
    kinds: dict[str, int]
    first_created_at: datetime
    last_created_at: datetime


class ExecutionArtifactsPage(BaseModel):
    executions: list[ExecutionArtifacts]
    total: int
    limit: int
    next_cursor: str | None


class StepSummary(BaseModel):
    step_name: str
    status: StepStatus
    attempt: int = Field(description="latest attempt seen; 0 until a step event arrives")
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    error: str | None
    skipped_reason: str | None = Field(description="why a skipped step did not run")
    artifact_count: int


class FailedItem(BaseModel):
    item: str = Field(description="what failed, e.g. a symbol")
    step: str = Field(description="the step it failed in")
    reason: str = Field(description="why, in words, with the data source's code and its meaning where known")
    code: int | None = Field(default=None, description="the data source's own error code (IBKR's 200, 162, ...)")


class RunSummary(BaseModel):
    execution_id: str
    workflow_id: str
    status: RunStatus = Field(description=RUN_STATUS_DESCRIPTION)
    trigger: str | None
    params: dict[str, Any]
    requested_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None = Field(description="finished - started; for a running run, time so far")
    error: str | None = Field(description="why a run failed, or since when an abandoned run is quiet")
    failed_items: list[FailedItem] = Field(description="items that failed in a partial (or failed) run")
    last_event_at: datetime | None = Field(description="the latest event of the run, of any kind")
    steps_total: int
    steps_finished: int = Field(description="steps that ran to an end (succeeded or failed); skipped ones did not")
    progress: float = Field(ge=0.0, le=1.0)
    artifact_count: int
    log_count: int


class RunDetail(RunSummary):
    steps: list[StepSummary]
    trace_id: str | None = Field(
        default=None, description="W3C trace id of the trigger that asked for the run (32 hex), when it had one"
    )


class RunPage(BaseModel):
    runs: list[RunSummary]
    total: int = Field(description=TOTAL_DESCRIPTION)
    total_is_exact: bool = Field(description=TOTAL_IS_EXACT_DESCRIPTION)
    limit: int
    next_cursor: str | None


class LogRecordOut(BaseModel):
    id: int
    event_id: UUID
    occurred_at: datetime
    level: str
    step_name: str | None
    message: str
    logger: str | None
    fields: dict[str, Any]


class LogPage(BaseModel):
    logs: list[LogRecordOut]
    limit: int
    next_cursor: str | None
