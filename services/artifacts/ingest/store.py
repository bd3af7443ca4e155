"""Store a batch of decoded events in one transaction, each event exactly once.

Dedupe is by `event_id`: lifecycle events in `run_events`, artifacts and log records by
the unique `event_id` of their own tables, so a redelivered batch changes nothing. Only
the events that were new move runs and steps along and count towards their totals.

Artifacts and log records are nearly all of what arrives, so they take the short way:
COPY straight into their tables, under a savepoint. Only a batch that holds something
already stored (a redelivery) fails there, on a unique index; it is then copied into a
temporary table and inserted from it with ON CONFLICT DO NOTHING RETURNING event_id,
which says which of its events were new. Their runs' and steps' counters and times move
in one statement per table, for the whole batch.

Lifecycle events are few and their rules many: they are inserted with ON CONFLICT DO
NOTHING, and every run they touch is loaded and moved by `lifecycle.apply_event`, event
by event in time order, its artifacts and log lines of the batch included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from asyncpg import Connection, UniqueViolationError
from pydantic_core import to_json
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.artifacts.db.models import LOG_LEVELS, TERMINAL_STATUSES, Run, RunEvent
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


def _json(value: Any) -> str:
    """JSON text for a JSONB column (asyncpg's own codec and the one SQLAlchemy sets both
    take text), written by pydantic-core: four times as fast as json.dumps, and the
    event bounds rule out what the two would write differently (NaN, infinities)."""
    return to_json(value).decode()


ARTIFACT_COLUMNS = (
    "artifact_id", "event_id", "name", "kind", "media_type", "workflow_id", "execution_id", "step_name",
    "dag_id", "task_id", "created_at", "metadata", "payload", "uri", "size_bytes", "sha256",
)


def artifact_record(event: ArtifactCreated) -> tuple:
    return (
        event.artifact_id, event.event_id, event.name, event.kind, event.media_type, event.workflow_id,
        event.execution_id, event.step_name, event.dag_id, event.task_id, event.occurred_at,
        _json(event.metadata), None if event.payload is None else _json(event.payload),
        event.uri, event.size_bytes, event.sha256,
    )


LOG_COLUMNS = (
    "event_id", "workflow_id", "execution_id", "step_name", "occurred_at", "level", "level_no", "message",
    "logger", "fields",
)


def log_record(event: LogRecorded) -> tuple:
    return (
        event.event_id, event.workflow_id, event.execution_id, event.step_name, event.occurred_at,
        event.level, LOG_LEVELS[event.level], event.message, event.logger, _json(event.fields),
    )


class PreparedBatch(list):
    """Events, and the COPY records of its artifacts and log lines built as they were
    added: the consumer builds them while the batch before is being stored, so that
    its transaction only sends them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[UUID, tuple] = {}

    def add(self, event: Event) -> None:
        self.append(event)
        if isinstance(event, ArtifactCreated):
            self.records[event.event_id] = artifact_record(event)
        elif isinstance(event, LogRecorded):
            self.records[event.event_id] = log_record(event)


# --- the batch ----------------------------------------------------------------------


async def store_batch(session: AsyncSession, events: Sequence[Event]) -> StoreResult:
    """Write `events` (a `PreparedBatch` or any sequence) within the caller's
    transaction; the caller commits."""
    built = events.records if isinstance(events, PreparedBatch) else {}
    unique = list({event.event_id: event for event in events}.values())
    if not unique:
        return StoreResult(stored=0, duplicates=len(events))
    artifacts = [e for e in unique if isinstance(e, ArtifactCreated)]
    logs = [e for e in unique if isinstance(e, LogRecorded)]
    lifecycle = [e for e in unique if not isinstance(e, ArtifactCreated | LogRecorded)]

    await _ensure_runs(session, unique)  # the first statement: it begins the transaction
    driver = await _driver_connection(session)
    new_lifecycle_ids = await _insert_new(session, lifecycle)
    new_lifecycle = [e for e in lifecycle if e.event_id in new_lifecycle_ids]
    new_counted = await _copy_new(driver, [
        _Copy("artifacts", ARTIFACT_COLUMNS, artifacts, [built.get(e.event_id) or artifact_record(e) for e in artifacts]),
        _Copy("log_records", LOG_COLUMNS, logs, [built.get(e.event_id) or log_record(e) for e in logs]),
    ])
    new_events = new_lifecycle + new_counted

    await _lock_runs(driver, {e.execution_id for e in new_events})
    moved = {e.execution_id for e in new_lifecycle}
    await _apply_in_order(session, moved, [e for e in new_events if e.execution_id in moved])
    await _count(driver, [e for e in new_counted if e.execution_id not in moved])
    return StoreResult(stored=len(new_events), duplicates=len(events) - len(new_events))


async def _ensure_runs(session: AsyncSession, events: Sequence[Event]) -> None:
    """Insert a row for every run not seen before: any event may be a run's first."""
    first: dict[str, Event] = {}
    for event in sorted(events, key=lambda e: e.occurred_at):
        first.setdefault(event.execution_id, event)
    ids = sorted(first)  # one lock order for every consumer: no deadlocks
    # Queued until an event other than the request says it runs (lifecycle.apply_event).
    await session.execute(
        text(
            "INSERT INTO runs (execution_id, workflow_id, status, opened_at) "
            "SELECT id, workflow_id, 'queued', opened_at "
            "FROM unnest(CAST(:ids AS text[]), CAST(:workflows AS text[]), CAST(:opened AS timestamptz[])) "
            "WITH ORDINALITY AS new (id, workflow_id, opened_at, n) ORDER BY n "
            "ON CONFLICT (execution_id) DO NOTHING"
        ),
        {"ids": ids, "workflows": [first[i].workflow_id for i in ids], "opened": [first[i].occurred_at for i in ids]},
    )


async def _driver_connection(session: AsyncSession) -> Connection:
    """The asyncpg connection under the session, for COPY; inside its transaction."""
    connection = await (await session.connection()).get_raw_connection()
    driver = connection.driver_connection
    if not driver.is_in_transaction():
        raise RuntimeError("the batch's transaction has not begun: COPY would commit on its own")
    return driver


async def _insert_new(session: AsyncSession, lifecycle: list[Event]) -> set:
    if not lifecycle:
        return set()
    result = await session.execute(
        insert(RunEvent).on_conflict_do_nothing().returning(RunEvent.event_id), [run_event_row(e) for e in lifecycle]
    )
    return set(result.scalars())


@dataclass(frozen=True)
class _Copy:
    table: str
    columns: tuple[str, ...]
    events: list[Event]
    records: list[tuple]


async def _copy_new(driver: Connection, copies: list[_Copy]) -> list[Event]:
    """Insert the rows of each table's events; returns the events that were new."""
    copies = [copy for copy in copies if copy.events]
    if not copies:
        return []
    await driver.execute("SAVEPOINT ingest_copy")
    try:
        for copy in copies:
            await driver.copy_records_to_table(copy.table, records=copy.records, columns=copy.columns)
    except UniqueViolationError:
        # Something of the batch is stored already (by event_id, or an artifact by its
        # artifact_id under a new event_id): find out what is new.
        await driver.execute("ROLLBACK TO SAVEPOINT ingest_copy")
    else:
        await driver.execute("RELEASE SAVEPOINT ingest_copy")
        return [event for copy in copies for event in copy.events]
    new_events = []
    for copy in copies:
        names = ", ".join(copy.columns)
        await driver.execute(f"CREATE TEMP TABLE ingest_staging AS SELECT {names} FROM {copy.table} WITH NO DATA")
        await driver.copy_records_to_table("ingest_staging", records=copy.records, columns=copy.columns)
        # No conflict target: either unique index makes a row a duplicate.
        inserted = await driver.fetch(
            f"INSERT INTO {copy.table} ({names}) SELECT {names} FROM ingest_staging "
            "ON CONFLICT DO NOTHING RETURNING event_id"
        )
        await driver.execute("DROP TABLE ingest_staging")
        new = {row[0] for row in inserted}
        new_events += [event for event in copy.events if event.event_id in new]
    return new_events


async def _lock_runs(driver: Connection, execution_ids: set[str]) -> None:
    if execution_ids:
        await driver.execute(
            "SELECT 1 FROM runs WHERE execution_id = ANY($1::text[]) ORDER BY execution_id FOR UPDATE",
            sorted(execution_ids),
        )


async def _apply_in_order(session: AsyncSession, execution_ids: set[str], events: list[Event]) -> None:
    """Fold the new events of runs whose lifecycle moved into them, one by one."""
    if not events:
        return
    result = await session.execute(
        select(Run)
        .where(Run.execution_id.in_(sorted(execution_ids)))
        .options(selectinload(Run.steps))
        .execution_options(populate_existing=True)
    )
    runs = {run.execution_id: run for run in result.scalars()}
    for event in sorted(events, key=lambda e: e.occurred_at):
        run = runs[event.execution_id]
        apply_event(run, event)
        if isinstance(event, ArtifactCreated):
            run.artifact_count += 1
            if event.step_name is not None:
                step_of(run, event.step_name, seen_running=True).artifact_count += 1
        elif isinstance(event, LogRecorded):
            run.log_count += 1
    await session.flush()


# What `lifecycle.apply_event` does to a run and its steps for an artifact or a log line,
# for a whole batch at once: the run's times widen; an open run is `running`, or
# `external` while ibflow neither requested nor started it; a step first seen this way
# is `running` (`external` in an external run) and comes after the run's other steps,
# in the order first seen. (apply_event also makes a run's external steps `running`
# once ibflow's own events of it arrive; those are lifecycle events, which it applies.)
# tests/integration/test_artifacts_store_batch.py holds the two to the same result.
_BY_IBFLOW = "(r.requested_at IS NOT NULL OR r.started_at IS NOT NULL)"
_TERMINAL = ", ".join(f"'{status}'" for status in sorted(TERMINAL_STATUSES))
# One statement, so one round trip per batch. Its parts all see the tables as they were
# before it: steps are counted where they exist and inserted where they do not.
_COUNT = f"""
    WITH moved_runs AS (
        UPDATE runs AS r SET
            artifact_count = r.artifact_count + new.artifacts,
            log_count = r.log_count + new.logs,
            opened_at = LEAST(r.opened_at, new.first_at),
            last_event_at = GREATEST(r.last_event_at, new.last_at),
            status = CASE
                WHEN r.status IN ({_TERMINAL}) THEN r.status
                WHEN {_BY_IBFLOW} THEN 'running'
                ELSE 'external' END,
            updated_at = now()
        FROM unnest($1::text[], $2::int[], $3::int[], $4::timestamptz[], $5::timestamptz[])
            AS new (execution_id, artifacts, logs, first_at, last_at)
        WHERE r.execution_id = new.execution_id
    ),
    steps AS (
        SELECT * FROM unnest($6::text[], $7::text[], $8::int[]) WITH ORDINALITY
            AS new (execution_id, step_name, artifacts, n)
    ),
    counted_steps AS (
        UPDATE run_steps AS s SET artifact_count = s.artifact_count + steps.artifacts, updated_at = now()
        FROM steps
        WHERE s.execution_id = steps.execution_id AND s.step_name = steps.step_name AND steps.artifacts > 0
    )
    INSERT INTO run_steps (execution_id, step_name, position, status, attempt, artifact_count)
    SELECT steps.execution_id, steps.step_name,
           (SELECT count(*) FROM run_steps AS s WHERE s.execution_id = steps.execution_id)
               + row_number() OVER (PARTITION BY steps.execution_id ORDER BY steps.n) - 1,
           CASE WHEN {_BY_IBFLOW} THEN 'running' ELSE 'external' END, 0, steps.artifacts
    FROM steps JOIN runs AS r ON r.execution_id = steps.execution_id
    WHERE NOT EXISTS (
        SELECT 1 FROM run_steps AS s WHERE s.execution_id = steps.execution_id AND s.step_name = steps.step_name)
    ORDER BY steps.n
"""


@dataclass
class _RunTally:
    first_at: datetime
    last_at: datetime
    artifacts: int = 0
    logs: int = 0


async def _count(driver: Connection, events: list[Event]) -> None:
    """Move runs and steps for new artifacts and log lines of runs no lifecycle event of
    this batch touched."""
    if not events:
        return
    runs: dict[str, _RunTally] = {}
    steps: dict[tuple[str, str], int] = {}  # in the order first seen: the new steps' positions
    for event in sorted(events, key=lambda e: e.occurred_at):
        tally = runs.get(event.execution_id)
        if tally is None:
            tally = runs[event.execution_id] = _RunTally(first_at=event.occurred_at, last_at=event.occurred_at)
        tally.last_at = event.occurred_at
        is_artifact = isinstance(event, ArtifactCreated)
        if is_artifact:
            tally.artifacts += 1
        else:
            tally.logs += 1
        if event.step_name is not None:
            key = (event.execution_id, event.step_name)
            steps[key] = steps.get(key, 0) + is_artifact
    ids = sorted(runs)
    await driver.execute(
        _COUNT, ids, [runs[i].artifacts for i in ids], [runs[i].logs for i in ids],
        [runs[i].first_at for i in ids], [runs[i].last_at for i in ids],
        [run for run, _ in steps], [step for _, step in steps], list(steps.values()),
    )
