"""The loop every scheduler replica runs: decide due slots, claim, publish.

Each tick (every `SCHEDULER_TICK_SECONDS`), for each schedule, in one transaction that
holds the schedule's row lock (so replicas decide one after the other, and a schedule
edit waits for at most one decision):
1. queued slots (held back by max_active_runs) are fired in order while runs may
   start, or skipped if the schedule was paused or they waited past the misfire window;
2. the slots since this replica's last look are decided (`slot_decisions`) and each is
   recorded: claimed to fire, queued, or skipped, with a ledger entry. A slot another
   replica already claimed is recorded as `deduplicated` and not fired again.
Then the claimed slots are published (`outbox`), backfills release their next runs
(`backfills`), and slots whose publication nobody confirmed in time are re-published.

The schedule's `evaluated_until` remembers how far slots were decided, across restarts:
slots between it and now that are older than the misfire grace were missed while no
replica ran, and the misfire policy decides what happens to them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import ledger, run_tracking
from services.scheduler.backfills import Backfills
from services.scheduler.clock import Clock
from services.scheduler.cron import slots_between
from services.scheduler.execution_ids import scheduled_execution_id
from services.scheduler.outbox import PendingRequest, RunRequestOutbox
from services.scheduler.rows import Schedule, ScheduleSlot
from services.scheduler.schedules import schedule_policy
from services.scheduler.slot_decisions import (
    MisfirePolicy,
    Outcome,
    SchedulePolicy,
    SkipReason,
    SlotDecision,
    decide_slots,
    describe_duration,
)

log = logging.getLogger(__name__)


class SchedulingLoop:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: RunRequestOutbox,
        clock: Clock,
        *,
        instance_id: str,
        tick_seconds: float,
        misfire_grace: timedelta,
        active_run_timeout: timedelta,
        max_lookback: timedelta,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._clock = clock
        self._instance_id = instance_id
        self.tick_seconds = tick_seconds
        self._grace = misfire_grace
        self._active_run_timeout = active_run_timeout
        self._max_lookback = max_lookback
        self._backfills = Backfills(
            sessions, outbox, clock, instance_id=instance_id, active_run_timeout=active_run_timeout
        )
        # how far this replica has looked, per workflow (starts at the stored mark)
        self._cursors: dict[str, datetime] = {}
        self.last_tick_at: datetime | None = None
        self.last_error: str | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
                self.last_error = None
            except Exception as exc:  # keep ticking: the database or broker may come back
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("scheduler tick failed")
            await asyncio.sleep(self.tick_seconds)

    async def tick(self) -> None:
        now = self._clock.now()
        async with self._sessions() as session:
            workflow_ids = list(await session.scalars(select(Schedule.workflow_id).order_by(Schedule.workflow_id)))
        for workflow_id in workflow_ids:
            pending = await self._decide(workflow_id, now)
            await self._outbox.publish(pending)
        await self._backfills.tick()
        await self._outbox.republish_expired()
        self.last_tick_at = now

    async def _decide(self, workflow_id: str, now: datetime) -> list[PendingRequest]:
        async with self._sessions.begin() as session:
            schedule = await session.scalar(
                select(Schedule).where(Schedule.workflow_id == workflow_id).with_for_update()
            )
            if schedule is None:
                return []
            policy = schedule_policy(schedule)
            pending = await self._drain_queue(session, schedule, policy, now)
            floor = now - self._max_lookback
            if schedule.evaluated_until < floor:
                self._record_lookback_gap(session, schedule, policy, floor, now)
            start = max(self._cursors.get(workflow_id, schedule.evaluated_until), floor)
            decisions = decide_slots(
                policy, slots_between(policy.cron, policy.zone, start, now), now=now, grace=self._grace
            )
            for decision in decisions:
                claimed = await self._record_decision(session, schedule, policy, decision, now)
                if claimed is not None:
                    pending.append(claimed)
            if now > schedule.evaluated_until:
                schedule.evaluated_until = now
        self._cursors[workflow_id] = now
        return pending

    async def _record_decision(
        self, session: AsyncSession, schedule: Schedule, policy: SchedulePolicy, decision: SlotDecision, now: datetime
    ) -> PendingRequest | None:
        workflow_id = schedule.workflow_id
        execution_id = scheduled_execution_id(workflow_id, decision.slot_at)
        existing = await session.get(ScheduleSlot, execution_id)
        if existing is not None:
            if existing.state != "skipped":
                self._ledger(session, workflow_id, execution_id, decision.slot_at, now, Outcome.DEDUPLICATED, None,
                             f"already {existing.state} by {existing.claimed_by or 'another replica'}; not fired again")
            return None
        if decision.outcome is Outcome.SKIPPED:
            self._add_slot(session, schedule, decision, execution_id, state="skipped", now=now)
            self._ledger(session, workflow_id, execution_id, decision.slot_at, now, Outcome.SKIPPED, decision.reason,
                         decision.detail)
            return None
        if policy.max_active_runs is not None:
            active = await run_tracking.count_active_runs(
                session, workflow_id, now=now, timeout=self._active_run_timeout
            )
            if active >= policy.max_active_runs:
                await self._hold_back(session, schedule, policy, decision, execution_id, active, now)
                return None
        claimed = await self._outbox.claim_new(
            session, execution_id=execution_id, workflow_id=workflow_id, trigger="schedule",
            slot_at=decision.slot_at, outcome=decision.outcome, detail=decision.detail,
            params=schedule.default_params, now=now,
        )
        if claimed is None:
            self._ledger(session, workflow_id, execution_id, decision.slot_at, now, Outcome.DEDUPLICATED, None,
                         "claimed by another replica at the same moment; not fired again")
        return claimed

    async def _hold_back(
        self, session: AsyncSession, schedule: Schedule, policy: SchedulePolicy, decision: SlotDecision,
        execution_id: str, active: int, now: datetime,
    ) -> None:
        """A slot that would exceed max_active_runs: queued, or skipped under policy none."""
        workflow_id = schedule.workflow_id
        busy = f"{active} run(s) active, max_active_runs is {policy.max_active_runs}"
        if policy.misfire_policy is MisfirePolicy.NONE:
            self._add_slot(session, schedule, decision, execution_id, state="skipped", now=now)
            self._ledger(session, workflow_id, execution_id, decision.slot_at, now, Outcome.SKIPPED,
                         SkipReason.CONCURRENCY, f"{busy}; misfire policy 'none' skips the slot")
            return
        if policy.misfire_policy is MisfirePolicy.LAST:
            for older in await self._queued(session, workflow_id):
                older.state = "skipped"
                self._ledger(session, workflow_id, older.execution_id, older.slot_at, now, Outcome.SKIPPED,
                             SkipReason.CONCURRENCY,
                             f"was waiting for a free run; superseded by the newer slot {decision.slot_at.isoformat()} "
                             "(misfire policy 'last')")
        self._add_slot(session, schedule, decision, execution_id, state="queued", now=now)
        self._ledger(session, workflow_id, execution_id, decision.slot_at, now, Outcome.QUEUED,
                     SkipReason.CONCURRENCY,
                     f"{busy}; waits for a run to end (at most {describe_duration(policy.misfire_window)})")

    async def _drain_queue(
        self, session: AsyncSession, schedule: Schedule, policy: SchedulePolicy, now: datetime
    ) -> list[PendingRequest]:
        queued = await self._queued(session, schedule.workflow_id)
        if not queued:
            return []
        active = await run_tracking.count_active_runs(
            session, schedule.workflow_id, now=now, timeout=self._active_run_timeout
        )
        pending = []
        for row in queued:
            waited = now - row.slot_at
            if policy.paused:
                row.state = "skipped"
                self._ledger(session, row.workflow_id, row.execution_id, row.slot_at, now, Outcome.SKIPPED,
                             SkipReason.PAUSED, "was waiting for a free run; the schedule was paused")
            elif waited > policy.misfire_window:
                row.state = "skipped"
                self._ledger(session, row.workflow_id, row.execution_id, row.slot_at, now, Outcome.SKIPPED,
                             SkipReason.CONCURRENCY,
                             f"waited {describe_duration(waited)} for a free run, longer than the misfire window "
                             f"({describe_duration(policy.misfire_window)})")
            elif policy.max_active_runs is None or active < policy.max_active_runs:
                row.detail = f"{row.detail}; waited {describe_duration(waited)} for a free run"
                pending.append(await self._outbox.claim_queued(session, row, now=now))
                active += 1
            else:
                break  # first in, first out
        return pending

    @staticmethod
    async def _queued(session: AsyncSession, workflow_id: str) -> list[ScheduleSlot]:
        return list(
            await session.scalars(
                select(ScheduleSlot)
                .where(ScheduleSlot.workflow_id == workflow_id, ScheduleSlot.state == "queued")
                .order_by(ScheduleSlot.slot_at)
                .with_for_update()
            )
        )

    def _record_lookback_gap(
        self, session: AsyncSession, schedule: Schedule, policy: SchedulePolicy, floor: datetime, now: datetime
    ) -> None:
        if next(slots_between(policy.cron, policy.zone, schedule.evaluated_until, floor), None) is None:
            return
        self._ledger(
            session, schedule.workflow_id, None, schedule.evaluated_until, now, Outcome.SKIPPED, SkipReason.MISFIRE,
            f"no scheduler ran from {schedule.evaluated_until.isoformat()} to {now.isoformat()}; the slots before "
            f"{floor.isoformat()} were not evaluated (older than SCHEDULER_MAX_LOOKBACK_SECONDS)",
        )

    @staticmethod
    def _add_slot(
        session: AsyncSession, schedule: Schedule, decision: SlotDecision, execution_id: str, *, state: str,
        now: datetime,
    ) -> None:
        session.add(
            ScheduleSlot(
                execution_id=execution_id,
                workflow_id=schedule.workflow_id,
                trigger="schedule",
                slot_at=decision.slot_at,
                state=state,
                outcome=str(decision.outcome) if decision.fires else None,
                detail=decision.detail,
                params=schedule.default_params,
                attempts=0,
                created_at=now,
            )
        )

    def _ledger(
        self, session: AsyncSession, workflow_id: str, execution_id: str | None, slot_at: datetime, now: datetime,
        outcome: Outcome, reason: SkipReason | None, detail: str,
    ) -> None:
        ledger.record(
            session, workflow_id=workflow_id, execution_id=execution_id, slot_at=slot_at, trigger="schedule",
            outcome=outcome, reason=reason, detail=detail, recorded_by=self._instance_id, recorded_at=now,
        )
