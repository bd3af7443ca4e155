"""Database rows (and query results) to HTTP schemas: the one place that translation lives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.artifacts.api import schemas
from services.artifacts.db.models import Artifact, LogRecord, Run, RunStep
from services.artifacts.queries.artifacts import ExecutionGroup
from services.artifacts.queries.runs import RAN_STEP_STATUSES, abandoned_since
from shared import bounded_json


def utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def content_url(artifact_id) -> str:
    return f"/api/artifacts/{artifact_id}/content"


def stored_json(value: Any) -> Any:
    """A stored JSON value as served: any row, even one written before the event bounds
    existed, under shared.bounded_json's rule (deeper than 32 levels becomes "…", integers
    beyond ±(2**53 - 1) their decimal text), so no response can fail to serialize."""
    return bounded_json.bounded(value)


def stored_object(value: Any) -> dict[str, Any]:
    """A stored JSON object as served; a row holding anything else (written by hand) is
    served as `{"value": <it>}` rather than refused."""
    value = stored_json(value)
    if value is None:
        return {}
    return value if isinstance(value, dict) else {"value": value}


def artifact_summary(row: Artifact, has_inline_payload: bool) -> schemas.ArtifactSummary:
    return schemas.ArtifactSummary(
        artifact_id=row.artifact_id,
        event_id=row.event_id,
        name=row.name,
        kind=row.kind,
        media_type=row.media_type,
        workflow_id=row.workflow_id,
        execution_id=row.execution_id,
        step_name=row.step_name,
        dag_id=row.dag_id,
        task_id=row.task_id,
        created_at=utc(row.created_at),
        stored_at=utc(row.stored_at),
        metadata=stored_object(row.metadata_),
        uri=row.uri,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        has_inline_payload=has_inline_payload,
        content_url=content_url(row.artifact_id),
    )


def artifact_detail(row: Artifact) -> schemas.Artifact:
    summary = artifact_summary(row, has_inline_payload=row.payload is not None)
    return schemas.Artifact(**summary.model_dump(), payload=stored_json(row.payload))


def execution_group(group: ExecutionGroup) -> schemas.ExecutionArtifacts:
    return schemas.ExecutionArtifacts(
        workflow_id=group.workflow_id,
        execution_id=group.execution_id,
        run_status=group.run_status,
        artifact_count=group.artifact_count,
        kinds=group.kinds,
        first_created_at=utc(group.first_created_at),
        last_created_at=utc(group.last_created_at),
    )


def _duration(started: datetime | None, finished: datetime | None, *, running: bool, now: datetime) -> float | None:
    if started is None:
        return None
    if finished is not None:
        return round((finished - started).total_seconds(), 3)
    return round(max((now - started).total_seconds(), 0.0), 3) if running else None


def _status_and_error(row: Run, abandoned_before: datetime | None) -> tuple[str, str | None]:
    quiet_since = abandoned_since(row, abandoned_before)
    if quiet_since is None:
        return row.status, row.error
    return "abandoned", (
        f"no event since {utc(quiet_since):%Y-%m-%d %H:%M:%S} UTC: {row.status} runs that stay quiet "
        "longer than ARTIFACTS_RUN_ABANDONED_AFTER_SECONDS are shown as abandoned"
    )


def run_summary(
    row: Run,
    steps_total: int,
    steps_finished: int,
    now: datetime | None = None,
    abandoned_before: datetime | None = None,
) -> schemas.RunSummary:
    """`abandoned_before`: an open run with no event since then is shown as abandoned."""
    now = now or datetime.now(UTC)
    status, error = _status_and_error(row, abandoned_before)
    if row.status in ("succeeded", "partial"):
        progress = 1.0
    else:
        progress = round(steps_finished / steps_total, 4) if steps_total else 0.0
    return schemas.RunSummary(
        execution_id=row.execution_id,
        workflow_id=row.workflow_id,
        status=status,
        trigger=row.trigger,
        params=stored_object(row.params),
        requested_at=utc(row.requested_at),
        started_at=utc(row.started_at),
        finished_at=utc(row.finished_at),
        duration_seconds=_duration(row.started_at, row.finished_at, running=status == "running", now=now),
        error=error,
        failed_items=[schemas.FailedItem.model_validate(item) for item in row.failed_items or []],
        last_event_at=utc(row.last_event_at or row.opened_at),
        steps_total=steps_total,
        steps_finished=steps_finished,
        progress=progress,
        artifact_count=row.artifact_count,
        log_count=row.log_count,
    )


def step_summary(row: RunStep, now: datetime) -> schemas.StepSummary:
    return schemas.StepSummary(
        step_name=row.step_name,
        status=row.status,
        attempt=row.attempt,
        started_at=utc(row.started_at),
        finished_at=utc(row.finished_at),
        duration_seconds=_duration(row.started_at, row.finished_at, running=row.status == "running", now=now),
        error=row.error,
        skipped_reason=row.skipped_reason,
        artifact_count=row.artifact_count,
    )


def run_detail(row: Run, now: datetime | None = None, abandoned_before: datetime | None = None) -> schemas.RunDetail:
    now = now or datetime.now(UTC)
    finished = sum(1 for step in row.steps if step.status in RAN_STEP_STATUSES)
    summary = run_summary(row, len(row.steps), finished, now, abandoned_before)
    return schemas.RunDetail(**summary.model_dump(), steps=[step_summary(step, now) for step in row.steps],
                             trace_id=row.trace_id)


def log_record(row: LogRecord) -> schemas.LogRecordOut:
    return schemas.LogRecordOut(
        id=row.id,
        event_id=row.event_id,
        occurred_at=utc(row.occurred_at),
        level=row.level,
        step_name=row.step_name,
        message=row.message,
        logger=row.logger,
        fields=stored_object(row.fields),
    )
