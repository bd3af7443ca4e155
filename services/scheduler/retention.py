"""Retention of the scheduler's own records: ledger entries, decided slots, tracked runs.

`RETENTION_SCHEDULER_DAYS` (unset: nothing is deleted) is the age past which they go,
in bounded batches, each its own short transaction. What always stays:

- slots that are not decided yet (`queued`) or whose request is not confirmed
  (`claimed`): they are the outbox;
- scheduled slots the loop could still look at: at or after their schedule's
  `evaluated_until`, or within `SCHEDULER_MAX_LOOKBACK_SECONDS` (the unique slot row is
  what makes a slot fire once);
- backfill slots and their tracked runs (only `schedule` and `manual` ones expire): a
  backfill follows its runs by them, and they grow with backfills, not with time;
- tracked runs updated within `SCHEDULER_ACTIVE_RUN_TIMEOUT_SECONDS`: they may still
  count against `max_active_runs`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.scheduler.rows import RetentionLedgerEntry
from shared.retention import Removal, RetentionJob, RetentionTiming, in_batches

if TYPE_CHECKING:
    from services.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)
SERVICE = "scheduler"
EXPIRING_TRIGGERS = ["schedule", "manual"]


class SchedulerRetentionSettings(RetentionTiming):
    # Ledger entries, decided slots and tracked runs older than this many days.
    retention_scheduler_days: int | None = Field(default=None, ge=1)


_EXPIRED_LEDGER = text("""
    WITH doomed AS (
        SELECT id FROM schedule_ledger WHERE recorded_at < :cutoff ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED
    )
    DELETE FROM schedule_ledger l USING doomed WHERE l.id = doomed.id
""")
_EXPIRED_SLOTS = text("""
    WITH doomed AS (
        SELECT s.execution_id FROM schedule_slots s
        LEFT JOIN schedules sc ON sc.workflow_id = s.workflow_id
        WHERE s.state IN ('published', 'skipped')
          AND s.trigger = ANY(:triggers)
          AND s.created_at < :cutoff AND s.slot_at < :cutoff AND s.slot_at < :lookback_floor
          AND (s.trigger = 'manual' OR sc.evaluated_until IS NULL OR s.slot_at < sc.evaluated_until)
        ORDER BY s.slot_at LIMIT :batch
        FOR UPDATE OF s SKIP LOCKED
    )
    DELETE FROM schedule_slots s USING doomed WHERE s.execution_id = doomed.execution_id
""")
_EXPIRED_TRACKED_RUNS = text("""
    WITH doomed AS (
        SELECT t.execution_id FROM tracked_runs t
        WHERE t.updated_at < :cutoff
          AND NOT EXISTS (SELECT 1 FROM schedule_slots s
                          WHERE s.execution_id = t.execution_id AND s.trigger <> ALL(:triggers))
        ORDER BY t.updated_at LIMIT :batch
        FOR UPDATE OF t SKIP LOCKED
    )
    DELETE FROM tracked_runs t USING doomed WHERE t.execution_id = doomed.execution_id
""")


class SchedulerRetention:
    def __init__(self, sessions: async_sessionmaker, *, days: int, batch: int, max_lookback: timedelta,
                 active_run_timeout: timedelta) -> None:
        self._sessions = sessions
        self._days = days
        self._batch = batch
        self._max_lookback = max_lookback
        self._active_run_timeout = active_run_timeout

    def rules(self) -> list[str]:
        days = self._days
        return [
            f"ledger entries recorded more than {days} days ago",
            f"decided schedule and manual slots older than {days} days, "
            "and never one the scheduling loop could still look at",
            f"tracked runs not updated for {days} days, except those of backfills",
        ]

    async def sweep(self) -> list[Removal]:
        now = datetime.now(UTC)
        cutoff = now - timedelta(days=self._days)
        ledger, slots, tracked = self.rules()
        plans = [
            (Removal("schedule_ledger", ledger, cutoff), _EXPIRED_LEDGER, {}),
            (Removal("schedule_slots", slots, cutoff), _EXPIRED_SLOTS,
             {"triggers": EXPIRING_TRIGGERS, "lookback_floor": now - self._max_lookback}),
            (Removal("tracked_runs", tracked, min(cutoff, now - self._active_run_timeout)), _EXPIRED_TRACKED_RUNS,
             {"triggers": EXPIRING_TRIGGERS}),
        ]
        removals = []
        for removal, statement, extra in plans:
            params = {"cutoff": removal.cutoff, "batch": self._batch} | extra
            try:
                removals.append(await in_batches(lambda: self._delete(statement, params), removal))
            except Exception as exc:
                log.exception("retention rule failed", extra={"rule": removal.rule})
                removal.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                removals.append(removal)
        return removals

    async def _delete(self, statement, params: dict) -> int:
        async with self._sessions.begin() as session:
            return (await session.execute(statement, params)).rowcount


def retention_job(settings: SchedulerSettings, engine: AsyncEngine, sessions: async_sessionmaker) -> RetentionJob:
    days = settings.retention_scheduler_days
    retention = SchedulerRetention(
        sessions, days=days or 0, batch=settings.retention_batch_rows,
        max_lookback=timedelta(seconds=settings.scheduler_max_lookback_seconds),
        active_run_timeout=timedelta(seconds=settings.scheduler_active_run_timeout_seconds),
    )
    return RetentionJob(service=SERVICE, engine=engine, ledger=RetentionLedgerEntry.__table__,
                        sweep=retention.sweep, timing=settings, rules=retention.rules() if days else [])
