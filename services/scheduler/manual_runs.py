"""Manual triggers: a fresh execution id, the schedule's params overridden by those given, through
the same outbox as scheduled slots (so a broker hiccup delays the run, never loses it),
and a `manual` ledger entry once published. They ignore pause and max_active_runs,
and count as active runs for the schedule's next slots."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler.clock import Clock
from services.scheduler.execution_ids import manual_execution_id
from services.scheduler.outbox import RunRequestOutbox
from services.scheduler.rows import Schedule
from services.scheduler.schedules import validated_params
from services.scheduler.slot_decisions import Outcome
from shared.events import RunParams


async def request_manual_run(
    sessions: async_sessionmaker[AsyncSession],
    outbox: RunRequestOutbox,
    clock: Clock,
    *,
    workflow_id: str,
    params: RunParams | None,
) -> str | None:
    """The new run's execution id; None if the workflow has no schedule row."""
    now = clock.now()
    execution_id = manual_execution_id()
    async with sessions.begin() as session:
        schedule = await session.get(Schedule, workflow_id)
        if schedule is None:
            return None
        run_params = {**schedule.default_params, **(validated_params(params) if params is not None else {})}
        pending = await outbox.claim_new(
            session, execution_id=execution_id, workflow_id=workflow_id, trigger="manual", slot_at=now,
            outcome=Outcome.MANUAL, detail="requested through the API" + ("" if params is None else " with params"),
            params=run_params, now=now,
        )
    assert pending is not None  # a fresh uuid never conflicts
    await outbox.publish([pending])
    return execution_id
