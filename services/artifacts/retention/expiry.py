"""Expired log records and artifacts, deleted in bounded batches.

Each batch is one short transaction: pick at most `batch` expired rows (`SKIP LOCKED`,
so a row the consumer holds is left for the next round), delete them, and take them
off the counters the consumer keeps on their runs and steps (`artifact_count`,
`log_count`). Runs are locked in `execution_id` order, the order the consumer locks
them in, so the two never deadlock.

What stays whatever its age: the artifacts of the last N succeeded runs of each
workflow, and those of runs still in flight (queued or running, with an event more
recent than the abandoned-after window).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.retention import Removal, in_batches

# Runs whose artifacts are never expired: the newest succeeded ones of each workflow,
# and the ones still in flight.
_SPARED_RUNS = """
    spared AS (
        SELECT execution_id FROM (
            SELECT execution_id,
                   row_number() OVER (PARTITION BY workflow_id ORDER BY opened_at DESC, execution_id DESC) AS newest
            FROM runs WHERE status = 'succeeded'
        ) ranked WHERE newest <= :keep
        UNION
        SELECT execution_id FROM runs
        WHERE status IN ('queued', 'running') AND coalesce(last_event_at, opened_at) >= :alive_since
    )
"""

_EXPIRED_ARTIFACTS = text(f"""
    WITH {_SPARED_RUNS},
    doomed AS (
        SELECT a.artifact_id FROM artifacts a
        WHERE a.created_at < :cutoff
          AND (CASE WHEN :kind_is_listed THEN a.kind = :kind ELSE NOT (a.kind = ANY(:listed_kinds)) END)
          AND NOT EXISTS (SELECT 1 FROM spared s WHERE s.execution_id = a.execution_id)
        ORDER BY a.created_at, a.artifact_id
        LIMIT :batch
        FOR UPDATE OF a SKIP LOCKED
    )
    DELETE FROM artifacts a USING doomed WHERE a.artifact_id = doomed.artifact_id
    RETURNING a.execution_id, a.step_name, a.kind
""")

# In id order: the oldest records were stored first, so each batch finds its rows at the
# start of the primary key instead of scanning the table for a time.
_EXPIRED_LOGS = text("""
    WITH doomed AS (
        SELECT id FROM log_records WHERE occurred_at < :cutoff
        ORDER BY id LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM log_records l USING doomed WHERE l.id = doomed.id
    RETURNING l.execution_id
""")

_LOCK_RUNS = text("SELECT 1 FROM runs WHERE execution_id = ANY(:ids) ORDER BY execution_id FOR UPDATE")
_UNCOUNT_RUN_ARTIFACTS = text("""
    UPDATE runs r SET artifact_count = greatest(r.artifact_count - d.n, 0)
    FROM unnest(CAST(:ids AS text[]), CAST(:ns AS int[])) AS d(execution_id, n)
    WHERE r.execution_id = d.execution_id
""")
_UNCOUNT_STEP_ARTIFACTS = text("""
    UPDATE run_steps s SET artifact_count = greatest(s.artifact_count - d.n, 0)
    FROM unnest(CAST(:ids AS text[]), CAST(:steps AS text[]), CAST(:ns AS int[])) AS d(execution_id, step_name, n)
    WHERE s.execution_id = d.execution_id AND s.step_name = d.step_name
""")
_UNCOUNT_RUN_LOGS = text("""
    UPDATE runs r SET log_count = greatest(r.log_count - d.n, 0)
    FROM unnest(CAST(:ids AS text[]), CAST(:ns AS int[])) AS d(execution_id, n)
    WHERE r.execution_id = d.execution_id
""")


async def expire_logs(sessions: async_sessionmaker, *, cutoff: datetime, batch: int, rule: str) -> Removal:
    removal = Removal(target="log_records", rule=rule, cutoff=cutoff)
    runs: Counter[str] = Counter()

    async def one_batch() -> int:
        async with sessions.begin() as session:
            gone = (await session.execute(_EXPIRED_LOGS, {"cutoff": cutoff, "batch": batch})).scalars().all()
            per_run = Counter(gone)
            if per_run:
                await _lock_runs(session, per_run)
                await session.execute(_UNCOUNT_RUN_LOGS, _counts(per_run))
            runs.update(per_run)
            return len(gone)

    await in_batches(one_batch, removal)
    removal.detail = {"runs": len(runs)}
    return removal


async def expire_artifacts(sessions: async_sessionmaker, *, cutoff: datetime, kind: str | None,
                           listed_kinds: list[str], keep: int, alive_since: datetime, batch: int,
                           rule: str) -> Removal:
    """Artifacts of `kind` older than `cutoff`, or with `kind=None`, those of every kind
    not in `listed_kinds` (the kinds that have a rule of their own)."""
    removal = Removal(target="artifacts", rule=rule, cutoff=cutoff)
    kinds: Counter[str] = Counter()
    runs: set[str] = set()
    params = {"cutoff": cutoff, "kind_is_listed": kind is not None, "kind": kind or "",
              "listed_kinds": listed_kinds, "keep": keep, "alive_since": alive_since, "batch": batch}

    async def one_batch() -> int:
        async with sessions.begin() as session:
            gone = (await session.execute(_EXPIRED_ARTIFACTS, params)).all()
            per_run = Counter(row.execution_id for row in gone)
            per_step = Counter((row.execution_id, row.step_name) for row in gone if row.step_name is not None)
            if per_run:
                await _lock_runs(session, per_run)
                await session.execute(_UNCOUNT_RUN_ARTIFACTS, _counts(per_run))
            if per_step:
                await session.execute(_UNCOUNT_STEP_ARTIFACTS, {
                    "ids": [execution_id for execution_id, _ in per_step],
                    "steps": [step for _, step in per_step],
                    "ns": list(per_step.values()),
                })
            kinds.update(row.kind for row in gone)
            runs.update(per_run)
            return len(gone)

    await in_batches(one_batch, removal)
    removal.detail = {"kinds": dict(kinds), "runs": len(runs)}
    return removal


async def _lock_runs(session: AsyncSession, per_run: Counter[str]) -> None:
    await session.execute(_LOCK_RUNS, {"ids": sorted(per_run)})


def _counts(per_run: Counter[str]) -> dict[str, list]:
    return {"ids": list(per_run), "ns": list(per_run.values())}
