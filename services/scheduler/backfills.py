"""Backfills: a workflow run once per trading session of a date range, each run as of its date.

Planning (when a backfill is submitted): the sessions of the schedule's trading
calendar (XNYS when the schedule has none) from start to end, both included, one
`backfill_runs` row each, queued, with the execution id `backfill-<workflow>-<YYYYMMDD>`.

Releasing (at every scheduler tick, about a second, while sessions are queued): oldest
session first, as many as the backfill's `max_active_runs` allows beside its runs still
going, each claimed in the outbox (`schedule_slots`) like a manual trigger and published
from there. The claim is keyed by the execution id, so a session whose run was requested
before (by an earlier backfill of the same dates, or by another replica a moment ago) is
not requested again: the backfill follows that run instead (`existing`). The ledger
records each request (outcome `backfill`), each session found already requested
(`deduplicated`) and each session a cancel left unrequested (`skipped`, `cancelled`).

Following: how each run ended comes from `tracked_runs`, which the run-events consumer
keeps. Once every run of a backfill has ended, a run of the workflow's scorecard is
requested, once.

Cancelling: queued sessions are not requested any more; requested runs go on to their end.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import ledger, trading_calendar
from services.scheduler.clock import Clock
from services.scheduler.execution_ids import backfill_execution_id, scorecard_execution_id
from services.scheduler.outbox import PendingRequest, RunRequestOutbox
from services.scheduler.rows import Backfill, BackfillRun, Schedule, TrackedRun
from services.scheduler.run_tracking import ACTIVE_STATUSES
from services.scheduler.slot_decisions import Outcome, SkipReason
from shared.scorecard import scorecard_workflow_id

log = logging.getLogger(__name__)

# About 20 years of sessions: more is a typo, and would hold the service for hours.
MAX_SESSIONS = 5000
# Checked before the calendar is read, which costs a moment per decade.
MAX_RANGE_DAYS = 366 * 20
# No exchange calendar nor market data reaches further back.
EARLIEST = date(1900, 1, 1)
# Queued rows looked at per release: enough to find the free places behind runs of the
# same dates that were requested before.
RELEASE_LOOKAHEAD = 200


class BackfillError(ValueError):
    """A backfill that cannot be planned; the message says why (a 422)."""


class NothingToCancel(Exception):
    """Every run of the backfill was requested already (a 409)."""


@dataclass(frozen=True)
class Counts:
    planned: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    partial: int = 0
    failed: int = 0
    cancelled: int = 0
    already_requested: int = 0

    @property
    def status(self) -> str:
        if self.queued or self.running:
            return "running"
        if self.failed:
            return "failed"
        return "partial" if self.partial else "succeeded"


def run_state(row_state: str, tracked: str | None) -> str:
    """queued, running, succeeded, partial, failed or cancelled: one session's state."""
    if row_state in ("queued", "cancelled"):
        return row_state
    if tracked is None or tracked in ACTIVE_STATUSES:
        return "running"
    return tracked


def plan_sessions(calendar: str, start: date, end: date, *, today: date) -> list[date]:
    """The sessions to run, or BackfillError saying why there are none to run."""
    if start > end:
        raise BackfillError(f"start {start} is after end {end}")
    if end > today:
        raise BackfillError(f"end {end} is after today ({today}): a run as of a future close cannot be made")
    if start < EARLIEST:
        raise BackfillError(f"start {start} is before {EARLIEST}: there is no market data to run on")
    if (end - start).days > MAX_RANGE_DAYS:
        raise BackfillError(f"{start} to {end} is longer than 20 years: split the range")
    sessions = trading_calendar.sessions_between(calendar, start, end)
    if not sessions:
        raise BackfillError(f"no {calendar} trading session from {start} to {end}")
    if len(sessions) > MAX_SESSIONS:
        raise BackfillError(
            f"{len(sessions)} sessions from {start} to {end}; a backfill runs at most {MAX_SESSIONS}: split the range"
        )
    return sessions


def session_instant(calendar: str, session: date) -> datetime:
    """The nominal time of a session's run: its close (midnight UTC when the calendar cannot tell)."""
    close = trading_calendar.session_close(calendar, session)
    return close or datetime.combine(session, time(0), UTC)


class Backfills:
    """Submits, releases, follows and cancels backfills; one per process, like the loop."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: RunRequestOutbox,
        clock: Clock,
        *,
        instance_id: str,
        active_run_timeout: timedelta,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._clock = clock
        self._instance_id = instance_id
        self._active_run_timeout = active_run_timeout

    # --- submitting -------------------------------------------------------------------

    async def submit(
        self, workflow_id: str, *, start: date, end: date, params: dict[str, Any], max_active_runs: int
    ) -> tuple[str, int] | None:
        """(backfill id, sessions planned); None when the workflow has no schedule."""
        if "as_of" in params:
            raise BackfillError("params cannot hold as_of: each run of a backfill is as of its own session")
        now = self._clock.now()
        async with self._sessions() as session:
            schedule = await session.get(Schedule, workflow_id)
            if schedule is None:
                return None
            calendar = schedule.calendar or trading_calendar.DEFAULT_CALENDAR
            run_params = {**schedule.default_params, **params}
        # building a calendar takes a moment: not on the event loop's time
        planned = await asyncio.to_thread(plan_sessions, calendar, start, end, today=now.astimezone(UTC).date())
        backfill_id = uuid4().hex
        async with self._sessions.begin() as session:
            session.add(Backfill(
                backfill_id=backfill_id, workflow_id=workflow_id, start_date=start, end_date=end, calendar=calendar,
                params=run_params, max_active_runs=max_active_runs, state="active", created_at=now, updated_at=now,
            ))
            await session.flush()
            await session.execute(insert(BackfillRun), [
                {"backfill_id": backfill_id, "session_date": day, "state": "queued",
                 "execution_id": backfill_execution_id(workflow_id, day)}
                for day in planned
            ])
        log.info("backfill planned", extra={"backfill_id": backfill_id, "workflow_id": workflow_id,
                                            "start": start.isoformat(), "end": end.isoformat(),
                                            "sessions": len(planned), "max_active_runs": max_active_runs})
        return backfill_id, len(planned)

    # --- releasing and finishing (every tick) ---------------------------------------------

    async def tick(self) -> None:
        async with self._sessions() as session:
            active = list(await session.scalars(
                select(Backfill.backfill_id).where(Backfill.state == "active").order_by(Backfill.created_at)
            ))
        for backfill_id in active:
            await self.release(backfill_id)
        await self._request_scorecards()

    async def release(self, backfill_id: str) -> None:
        """Request the next queued sessions of the backfill, as many as may run now."""
        now = self._clock.now()
        async with self._sessions.begin() as session:
            # one replica at a time per backfill; the others go on with other work
            backfill = await session.scalar(
                select(Backfill).where(Backfill.backfill_id == backfill_id, Backfill.state == "active")
                .with_for_update(skip_locked=True)
            )
            if backfill is None:
                return
            pending = await self._release_locked(session, backfill, now)
        await self._outbox.publish(pending)

    async def _release_locked(self, session: AsyncSession, backfill: Backfill, now: datetime) -> list[PendingRequest]:
        free = backfill.max_active_runs - await self._active(session, backfill.backfill_id, now)
        queued = list(await session.scalars(
            select(BackfillRun)
            .where(BackfillRun.backfill_id == backfill.backfill_id, BackfillRun.state == "queued")
            .order_by(BackfillRun.session_date)
            .limit(RELEASE_LOOKAHEAD)
            .with_for_update()
        ))
        pending: list[PendingRequest] = []
        for row in queued:
            if free <= 0:
                break
            claimed = await self._outbox.claim_new(
                session, execution_id=row.execution_id, workflow_id=backfill.workflow_id, trigger="backfill",
                slot_at=session_instant(backfill.calendar, row.session_date), outcome=Outcome.BACKFILL,
                detail=f"backfill {backfill.backfill_id}: the run as of {row.session_date}",
                params={**backfill.params, "as_of": row.session_date.isoformat()}, now=now,
            )
            if claimed is not None:
                row.state, row.released_at = "released", now
                pending.append(claimed)
                free -= 1
                continue
            row.state = "existing"
            if await self._tracked_active(session, row.execution_id, now):
                free -= 1
            ledger.record(
                session, workflow_id=backfill.workflow_id, execution_id=row.execution_id,
                slot_at=session_instant(backfill.calendar, row.session_date), trigger="backfill",
                outcome=Outcome.DEDUPLICATED,
                detail=f"backfill {backfill.backfill_id}: the run as of {row.session_date} was requested before; "
                       "not requested again, followed instead",
                recorded_by=self._instance_id, recorded_at=now,
            )
        still_queued = len(queued) == RELEASE_LOOKAHEAD or any(row.state == "queued" for row in queued)
        if not still_queued:
            backfill.state = "released"
        backfill.updated_at = now
        return pending

    async def _active(self, session: AsyncSession, backfill_id: str, now: datetime) -> int:
        return await session.scalar(
            select(func.count())
            .select_from(BackfillRun)
            .join(TrackedRun, TrackedRun.execution_id == BackfillRun.execution_id)
            .where(
                BackfillRun.backfill_id == backfill_id,
                BackfillRun.state.in_(("released", "existing")),
                TrackedRun.status.in_(ACTIVE_STATUSES),
                # a run that never reported an end stops holding its place, as for schedules
                TrackedRun.updated_at >= now - self._active_run_timeout,
            )
        ) or 0

    async def _tracked_active(self, session: AsyncSession, execution_id: str, now: datetime) -> bool:
        tracked = await session.get(TrackedRun, execution_id)
        return (tracked is not None and tracked.status in ACTIVE_STATUSES
                and tracked.updated_at >= now - self._active_run_timeout)

    async def _request_scorecards(self) -> None:
        """A scorecard run for each backfill whose runs have all ended."""
        now = self._clock.now()
        async with self._sessions.begin() as session:
            finished = list(await session.scalars(
                select(Backfill)
                .where(Backfill.state.in_(("released", "cancelled")), Backfill.scorecard_execution_id.is_(None))
                .order_by(Backfill.created_at)
                .with_for_update(skip_locked=True)
            ))
            pending = []
            for backfill in finished:
                if await self._active(session, backfill.backfill_id, now):
                    continue
                execution_id = scorecard_execution_id(backfill.workflow_id, backfill.backfill_id)
                claimed = await self._outbox.claim_new(
                    session, execution_id=execution_id, workflow_id=scorecard_workflow_id(backfill.workflow_id),
                    trigger="backfill", slot_at=now, outcome=Outcome.BACKFILL,
                    detail=f"scorecard of {backfill.workflow_id} after backfill {backfill.backfill_id}",
                    params={}, now=now,
                )
                backfill.scorecard_execution_id = execution_id
                backfill.updated_at = now
                if claimed is not None:
                    pending.append(claimed)
        await self._outbox.publish(pending)

    # --- on request -----------------------------------------------------------------------

    async def request_scorecard(self, workflow_id: str) -> str:
        """A scorecard run of the workflow now; its execution id."""
        now = self._clock.now()
        execution_id = scorecard_execution_id(workflow_id)
        async with self._sessions.begin() as session:
            pending = await self._outbox.claim_new(
                session, execution_id=execution_id, workflow_id=scorecard_workflow_id(workflow_id), trigger="manual",
                slot_at=now, outcome=Outcome.MANUAL, detail=f"scorecard of {workflow_id} requested through the API",
                params={}, now=now,
            )
        assert pending is not None  # a fresh uuid never conflicts
        await self._outbox.publish([pending])
        return execution_id

    async def cancel(self, workflow_id: str, backfill_id: str) -> bool:
        """False when there is no such backfill; NothingToCancel when all its runs were requested."""
        now = self._clock.now()
        async with self._sessions.begin() as session:
            backfill = await session.scalar(
                select(Backfill).where(Backfill.backfill_id == backfill_id, Backfill.workflow_id == workflow_id)
                .with_for_update()
            )
            if backfill is None:
                return False
            if backfill.state == "cancelled":
                return True
            if backfill.state == "released":
                raise NothingToCancel(
                    f"every run of backfill {backfill_id} has been requested; requested runs are not stopped"
                )
            backfill.state, backfill.cancelled_at, backfill.updated_at = "cancelled", now, now
            queued = await session.scalars(
                select(BackfillRun)
                .where(BackfillRun.backfill_id == backfill_id, BackfillRun.state == "queued")
                .with_for_update()
            )
            for row in queued:
                row.state = "cancelled"
                ledger.record(
                    session, workflow_id=workflow_id, execution_id=row.execution_id,
                    slot_at=session_instant(backfill.calendar, row.session_date), trigger="backfill",
                    outcome=Outcome.SKIPPED, reason=SkipReason.CANCELLED,
                    detail=f"backfill {backfill_id} was cancelled before the run as of {row.session_date} was requested",
                    recorded_by=self._instance_id, recorded_at=now,
                )
        log.info("backfill cancelled", extra={"backfill_id": backfill_id, "workflow_id": workflow_id})
        return True

    # --- reading --------------------------------------------------------------------------

    async def counts(self, session: AsyncSession, backfill_ids: list[str]) -> dict[str, Counts]:
        rows = (await session.execute(
            select(BackfillRun.backfill_id, BackfillRun.state, TrackedRun.status, func.count())
            .outerjoin(TrackedRun, TrackedRun.execution_id == BackfillRun.execution_id)
            .where(BackfillRun.backfill_id.in_(backfill_ids))
            .group_by(BackfillRun.backfill_id, BackfillRun.state, TrackedRun.status)
        )).all()
        tallies: dict[str, Counter[str]] = {backfill_id: Counter() for backfill_id in backfill_ids}
        for backfill_id, row_state, tracked, count in rows:
            tally = tallies[backfill_id]
            tally[run_state(row_state, tracked)] += count
            tally["planned"] += count
            if row_state == "existing":
                tally["already_requested"] += count
        return {backfill_id: Counts(**tally) for backfill_id, tally in tallies.items()}

    @staticmethod
    async def runs(session: AsyncSession, backfill_id: str) -> list[tuple[BackfillRun, str | None]]:
        return list((await session.execute(
            select(BackfillRun, TrackedRun.status)
            .outerjoin(TrackedRun, TrackedRun.execution_id == BackfillRun.execution_id)
            .where(BackfillRun.backfill_id == backfill_id)
            .order_by(BackfillRun.session_date)
        )).all())
