"""Which runs are still going, for `max_active_runs`, and how the ended ones ended, for
backfills.

The scheduler reads no other service's tables: it marks the runs it requests, and
follows `ibflow.runs.events` (consumer group `ibflow-scheduler`) for their start and
end. A run that never reports an end stops counting after
`SCHEDULER_ACTIVE_RUN_TIMEOUT_SECONDS`, so a lost run cannot block a schedule forever.
A backfill's runs do not count against the schedule's `max_active_runs` (the backfill
has its own): the morning's scheduled run does not wait behind a replay of last year.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler.execution_ids import BACKFILL_PREFIX
from services.scheduler.rows import TrackedRun
from shared.events import Event, RunFailed, RunPartiallySucceeded, RunStarted, RunSucceeded

ACTIVE_STATUSES = ("requested", "running")
TERMINAL_STATUSES = ("succeeded", "partial", "failed")
_STATUS_OF_EVENT: dict[type[Event], str] = {
    RunStarted: "running",
    RunSucceeded: "succeeded",
    # The workflow ran to its end, so the run no longer counts towards max_active_runs;
    # which items failed is the artifacts service's to tell.
    RunPartiallySucceeded: "partial",
    RunFailed: "failed",
}


async def mark_requested(session: AsyncSession, *, execution_id: str, workflow_id: str, now: datetime) -> None:
    await session.execute(
        insert(TrackedRun)
        .values(execution_id=execution_id, workflow_id=workflow_id, status="requested", updated_at=now)
        .on_conflict_do_nothing()
    )


async def apply_run_event(session: AsyncSession, event: Event, *, now: datetime) -> bool:
    """Record a run lifecycle event; False for events that say nothing about a run's state."""
    status = _STATUS_OF_EVENT.get(type(event))
    if status is None:
        return False
    statement = insert(TrackedRun).values(
        execution_id=event.execution_id, workflow_id=event.workflow_id, status=status, updated_at=now
    )
    # an end is final: a redelivered run.started must not revive a finished run
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[TrackedRun.execution_id],
            set_={"status": statement.excluded.status, "updated_at": statement.excluded.updated_at},
            where=TrackedRun.status.not_in(TERMINAL_STATUSES),
        )
    )
    return True


async def count_active_runs(session: AsyncSession, workflow_id: str, *, now: datetime, timeout: timedelta) -> int:
    return await session.scalar(
        select(func.count())
        .select_from(TrackedRun)
        .where(
            TrackedRun.workflow_id == workflow_id,
            TrackedRun.status.in_(ACTIVE_STATUSES),
            TrackedRun.updated_at >= now - timeout,
            TrackedRun.execution_id.not_like(f"{BACKFILL_PREFIX}%"),
        )
    ) or 0
