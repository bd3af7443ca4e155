"""Retention of the scheduler's ledger, slots and tracked runs, against a real PostgreSQL:
the expired rows go; the outbox, the slots the loop may still look at, backfills' rows
and runs that may still count against max_active_runs stay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from services.scheduler.migrate import migrate
from services.scheduler.retention import retention_job
from services.scheduler.rows import LedgerEntry, RetentionLedgerEntry, ScheduleSlot, TrackedRun
from services.scheduler.settings import SchedulerSettings
from shared.database import normalize_database_url

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@pytest.fixture
async def sessions(new_database) -> AsyncIterator[tuple[str, async_sessionmaker]]:
    url = new_database("scheduler_retention")
    await migrate(url)
    engine = create_async_engine(normalize_database_url(url))
    try:
        yield url, async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


def settings_for(url: str, **extra) -> SchedulerSettings:
    return SchedulerSettings(database_url=url, **extra)


async def populate(sessions: async_sessionmaker) -> None:
    async with sessions.begin() as session:
        # The loop has decided this workflow's slots up to 40 days ago only.
        await session.execute(text("""
            INSERT INTO schedules (workflow_id, cron, timezone, paused, misfire_policy, misfire_window_seconds,
                                   calendar, default_params, evaluated_until, created_at, updated_at)
            VALUES ('wf', '0 9 * * 1-5', 'UTC', false, 'all', 3600, NULL, '{}', :until, :created, :created)
        """), {"until": ago(40), "created": ago(400)})
        slots = [
            ("scheduled-old-published", "schedule", ago(60), "published"),
            ("scheduled-old-skipped", "schedule", ago(50), "skipped"),
            ("scheduled-old-claimed", "schedule", ago(55), "claimed"),     # the outbox: unconfirmed
            ("scheduled-old-queued", "schedule", ago(45), "queued"),       # the outbox: waits its turn
            ("scheduled-not-evaluated", "schedule", ago(35), "published"),  # after evaluated_until
            ("manual-old", "manual", ago(40), "published"),
            ("backfill-old", "backfill", ago(70), "published"),
            ("scheduled-recent", "schedule", ago(1), "published"),
        ]
        for execution_id, trigger, at, state in slots:
            session.add(ScheduleSlot(execution_id=execution_id, workflow_id="wf", trigger=trigger, slot_at=at,
                                     state=state, detail="", params={}, attempts=0, created_at=at))
        for i, at in enumerate((ago(60), ago(45), ago(31), ago(29), ago(1))):
            session.add(LedgerEntry(workflow_id="wf", execution_id=f"e{i}", slot_at=at, trigger="schedule",
                                    outcome="fired", detail="", recorded_by="test", recorded_at=at))
        for execution_id, status, at in (("manual-old", "succeeded", ago(40)), ("lost-run", "requested", ago(35)),
                                         ("backfill-old", "partial", ago(70)), ("recent-run", "running", ago(0.1))):
            session.add(TrackedRun(execution_id=execution_id, workflow_id="wf", status=status, updated_at=at))


async def left(sessions: async_sessionmaker, column) -> set:
    async with sessions() as session:
        return set(await session.scalars(select(column)))


async def test_nothing_is_deleted_unless_configured(sessions):
    url, maker = sessions
    await populate(maker)
    job = retention_job(settings_for(url), maker.kw["bind"], maker)
    assert job.rules == []
    job.start()
    assert job._task is None
    assert len(await left(maker, ScheduleSlot.execution_id)) == 8


async def test_expired_rows_go_and_protected_ones_stay(sessions):
    url, maker = sessions
    await populate(maker)
    settings = settings_for(url, retention_scheduler_days=30, retention_batch_rows=2,
                            scheduler_max_lookback_seconds=7 * 86400)
    job = retention_job(settings, maker.kw["bind"], maker)
    removals = await job.run_once()

    assert await left(maker, ScheduleSlot.execution_id) == {
        "scheduled-old-claimed", "scheduled-old-queued", "scheduled-not-evaluated", "backfill-old",
        "scheduled-recent",
    }
    assert await left(maker, LedgerEntry.recorded_at) == {ago(29), ago(1)}
    assert await left(maker, TrackedRun.execution_id) == {"backfill-old", "recent-run"}

    assert {(r.target, r.removed) for r in removals} == {
        ("schedule_ledger", 3), ("schedule_slots", 3), ("tracked_runs", 2)}
    assert next(r for r in removals if r.target == "schedule_ledger").batches == 2
    async with maker() as session:
        ledger = (await session.scalars(select(RetentionLedgerEntry).order_by(RetentionLedgerEntry.id))).all()
    assert [(row.target, row.removed) for row in ledger] == [
        ("schedule_ledger", 3), ("schedule_slots", 3), ("tracked_runs", 2)]
    assert ledger[0].rule == "ledger entries recorded more than 30 days ago"


async def test_slots_stay_for_the_loops_lookback_even_when_older_than_the_setting(sessions):
    url, maker = sessions
    await populate(maker)
    settings = settings_for(url, retention_scheduler_days=30, scheduler_max_lookback_seconds=100 * 86400)
    await retention_job(settings, maker.kw["bind"], maker).run_once()
    assert "scheduled-old-published" in await left(maker, ScheduleSlot.execution_id)


async def test_a_tracked_run_that_may_still_count_is_kept(sessions):
    url, maker = sessions
    await populate(maker)
    settings = settings_for(url, retention_scheduler_days=30, scheduler_active_run_timeout_seconds=50 * 86400)
    await retention_job(settings, maker.kw["bind"], maker).run_once()
    assert "lost-run" in await left(maker, TrackedRun.execution_id)
