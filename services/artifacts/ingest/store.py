"""Store a batch of decoded events in one transaction, each event exactly once.

Dedupe is by `event_id`: lifecycle events in `run_events`, artifacts and log records by
the unique `event_id` of their own tables, all with INSERT ... ON CONFLICT DO NOTHING,
so a redelivered batch changes nothing. Only the events that were new move runs and
steps along and count towards their totals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.artifacts.db.models import LOG_LEVELS, Artifact, LogRecord, Run, RunEvent
from services.artifacts.ingest.lifecycle import apply_event, step_of
from shared.events import ArtifactCreated, Event, LogRecorded


@dataclass(frozen=True)
class StoreResult:
    stored: int
    duplicates: int


# --- event -> row mapping -----------------------------------------------------------


def run_event_row(event: Event) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "workflow_id": event.workflow_id,
        "execution_id": event.execution_id,
        "step_name": event.step_name,
        "occurred_at": event.occurred_at,
        "body": event.model_dump(mode="json"),
    }


def artifact_row(event: ArtifactCreated) -> dict[str, Any]:
    return {
        "artifact_id": event.artifact_id,
        "event_id": event.event_id,
        "name": event.name,
        "kind": event.kind,
        "media_type": event.media_type,
        "workflow_id": event.workflow_id,
        "execution_id": event.execution_id,
        "step_name": event.step_name,
        "dag_id": event.dag_id,
        "task_id": event.task_id,
        "created_at": event.occurred_at,
        "metadata_": event.metadata,
        "payload": event.payload,
        "uri": event.uri,
        "size_bytes": event.size_bytes,
        "sha256": event.sha256,
    }


def log_row(event: LogRecorded) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "workflow_id": event.workflow_id,
        "execution_id": event.execution_id,
        "step_name": event.step_name,
        "occurred_at": event.occurred_at,
        "level": event.level,
        "level_no": LOG_LEVELS[event.level],
        "message": event.message,
        "logger": event.logger,
        "fields": event.fields,
    }


# --- the batch ----------------------------------------------------------------------


async def store_batch(session: AsyncSession, events: Sequence[Event]) -> StoreResult:
    """Write `events` within the caller's transaction; the caller commits."""
    unique = list({event.event_id: event for event in events}.values())
    if not unique:
        return StoreResult(stored=0, duplicates=len(events))
    await _ensure_runs(session, unique)

    new_ids = set()
    new_ids |= await _insert_new(
        session,
        RunEvent,
        RunEvent.event_id,
        [run_event_row(e) for e in unique if not isinstance(e, ArtifactCreated | LogRecorded)],
    )
    new_ids |= await _insert_new(
        session, Artifact, Artifact.event_id, [artifact_row(e) for e in unique if isinstance(e, ArtifactCreated)]
    )
    new_ids |= await _insert_new(
        session, LogRecord, LogRecord.event_id, [log_row(e) for e in unique if isinstance(e, LogRecorded)]
    )
    new_events = sorted((e for e in unique if e.event_id in new_ids), key=lambda e: e.occurred_at)

    runs = await _lock_runs(session, {e.execution_id for e in new_events})
    for event in new_events:
        run = runs[event.execution_id]
        apply_event(run, event)
        if isinstance(event, ArtifactCreated):
            run.artifact_count += 1
            if event.step_name is not None:
                step_of(run, event.step_name, seen_running=True).artifact_count += 1
        elif isinstance(event, LogRecorded):
            run.log_count += 1
    await session.flush()
    return StoreResult(stored=len(new_events), duplicates=len(events) - len(new_events))


async def _ensure_runs(session: AsyncSession, events: Sequence[Event]) -> None:
    """Insert a row for every run not seen before: any event may be a run's first."""
    first: dict[str, Event] = {}
    for event in sorted(events, key=lambda e: e.occurred_at):
        first.setdefault(event.execution_id, event)
    # Queued until an event other than the request says it runs (lifecycle.apply_event).
    rows = [
        {
            "execution_id": execution_id,
            "workflow_id": first[execution_id].workflow_id,
            "status": "queued",
            "opened_at": first[execution_id].occurred_at,
        }
        for execution_id in sorted(first)  # one lock order for every consumer: no deadlocks
    ]
    await session.execute(insert(Run).on_conflict_do_nothing(index_elements=[Run.execution_id]), rows)


async def _insert_new(session: AsyncSession, model, event_id_column, rows: list[dict[str, Any]]) -> set:
    if not rows:
        return set()
    # No conflict target: an artifact redelivered under a new event_id but the same
    # artifact_id is a duplicate too.
    result = await session.execute(insert(model).on_conflict_do_nothing().returning(event_id_column), rows)
    return set(result.scalars())


async def _lock_runs(session: AsyncSession, execution_ids: set[str]) -> dict[str, Run]:
    if not execution_ids:
        return {}
    result = await session.execute(
        select(Run)
        .where(Run.execution_id.in_(sorted(execution_ids)))
        .order_by(Run.execution_id)
        .with_for_update()
        .options(selectinload(Run.steps))
        .execution_options(populate_existing=True)
    )
    return {run.execution_id: run for run in result.scalars()}
