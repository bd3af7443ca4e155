"""Claim, publish, confirm: how a slot's `RunRequested` leaves the scheduler exactly once.

1. Claim: in the transaction that decides the slot, its `schedule_slots` row becomes
   `claimed` with the exact event value, the claiming replica's id and a lease.
2. Publish the value to `ibflow.runs.requested` and wait for the broker's ack.
3. Confirm: the row becomes `published` and the ledger records the outcome.

A replica that dies between 1 and 3 leaves a claimed row behind; once its lease runs
out any replica re-publishes the same value (same execution id, same event id) and
confirms it. A failed publish shortens the lease to a backoff, so it is retried.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opentelemetry.trace import SpanKind

from services.scheduler import ledger, metrics, run_tracking
from services.scheduler.clock import Clock
from services.scheduler.execution_ids import request_event_id
from services.scheduler.publisher import RunPublisher
from services.scheduler.rows import ScheduleSlot
from services.scheduler.slot_decisions import Outcome
from shared import tracing
from shared.events import RunParams, RunRequested

log = logging.getLogger(__name__)

REPUBLISH_BATCH = 50


@dataclass(frozen=True)
class PendingRequest:
    """A claimed slot whose event is to be published."""

    execution_id: str
    workflow_id: str
    event: str
    attempts: int
    # the trace context published with the event, fixed at claim time like the event
    traceparent: str | None = None


class RunRequestOutbox:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publisher: RunPublisher,
        clock: Clock,
        *,
        instance_id: str,
        lease: timedelta,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._clock = clock
        self._instance_id = instance_id
        self._lease = lease

    # --- claiming (inside the caller's transaction) ---------------------------------

    async def claim_new(
        self,
        session: AsyncSession,
        *,
        execution_id: str,
        workflow_id: str,
        trigger: str,
        slot_at: datetime,
        outcome: Outcome,
        detail: str,
        params: dict[str, Any],
        now: datetime,
    ) -> PendingRequest | None:
        """Claim a slot nobody has claimed; None if another replica already has it."""
        event = self._event(execution_id, workflow_id, trigger, slot_at, params)
        traceparent = _trace_context(execution_id, workflow_id, trigger)
        inserted = await session.scalar(
            insert(ScheduleSlot)
            .values(
                execution_id=execution_id,
                workflow_id=workflow_id,
                trigger=trigger,
                slot_at=slot_at,
                state="claimed",
                outcome=str(outcome),
                detail=detail,
                params=params,
                event=event,
                traceparent=traceparent,
                claimed_by=self._instance_id,
                claimed_at=now,
                lease_until=now + self._lease,
                attempts=1,
                created_at=now,
            )
            .on_conflict_do_nothing()
            .returning(ScheduleSlot.execution_id)
        )
        if inserted is None:
            return None
        await run_tracking.mark_requested(session, execution_id=execution_id, workflow_id=workflow_id, now=now)
        return PendingRequest(execution_id, workflow_id, event, attempts=1, traceparent=traceparent)

    async def claim_queued(self, session: AsyncSession, row: ScheduleSlot, *, now: datetime) -> PendingRequest:
        """Claim a queued slot whose row the caller holds locked."""
        row.event = self._event(row.execution_id, row.workflow_id, row.trigger, row.slot_at, row.params)
        row.traceparent = _trace_context(row.execution_id, row.workflow_id, row.trigger)
        row.state = "claimed"
        row.claimed_by = self._instance_id
        row.claimed_at = now
        row.lease_until = now + self._lease
        row.attempts = 1
        await run_tracking.mark_requested(session, execution_id=row.execution_id, workflow_id=row.workflow_id, now=now)
        return PendingRequest(row.execution_id, row.workflow_id, row.event, attempts=1,
                              traceparent=row.traceparent)

    def _event(
        self, execution_id: str, workflow_id: str, trigger: str, slot_at: datetime, params: dict[str, Any]
    ) -> str:
        # occurred_at is the wall clock's (the default), not the scheduler's injectable
        # clock: consumers refuse events from the future, and a test clock may be years ahead.
        return RunRequested(
            event_id=request_event_id(execution_id),
            workflow_id=workflow_id,
            execution_id=execution_id,
            trigger=trigger,
            params=RunParams.model_validate(params),
            scheduled_for=slot_at if trigger == "schedule" else None,
            requested_by="api" if trigger == "manual" else f"scheduler:{self._instance_id}",
        ).model_dump_json()

    # --- publishing -----------------------------------------------------------------

    async def publish(self, pending: list[PendingRequest]) -> None:
        for request in pending:
            try:
                await self._publisher.publish(request.execution_id.encode(), request.event.encode(),
                                              traceparent=request.traceparent)
            except Exception as exc:  # the broker's errors are many; every one means "retry later"
                log.warning(
                    "publishing a run request failed; it will be retried",
                    extra={"execution_id": request.execution_id, "attempt": request.attempts, "error": repr(exc)},
                )
                await self._record_failure(request, exc)
                continue
            await self._confirm(request)

    async def republish_expired(self) -> int:
        """Re-publish claimed slots whose lease ran out (their claimer died or failed)."""
        now = self._clock.now()
        async with self._sessions.begin() as session:
            expired = (
                select(ScheduleSlot.execution_id)
                .where(ScheduleSlot.state == "claimed", ScheduleSlot.lease_until <= now)
                .order_by(ScheduleSlot.lease_until)
                .limit(REPUBLISH_BATCH)
                .with_for_update(skip_locked=True)
            )
            rows = (
                await session.execute(
                    update(ScheduleSlot)
                    .where(ScheduleSlot.execution_id.in_(expired))
                    .values(
                        claimed_by=self._instance_id,
                        claimed_at=now,
                        lease_until=now + self._lease,
                        attempts=ScheduleSlot.attempts + 1,
                    )
                    .returning(ScheduleSlot.execution_id, ScheduleSlot.workflow_id, ScheduleSlot.event,
                               ScheduleSlot.attempts, ScheduleSlot.traceparent)
                )
            ).all()
        pending = [PendingRequest(r.execution_id, r.workflow_id, r.event, r.attempts, r.traceparent) for r in rows]
        if pending:
            log.info("re-publishing run requests whose lease ran out",
                     extra={"execution_ids": [p.execution_id for p in pending]})
            await self.publish(pending)
        return len(pending)

    async def _confirm(self, request: PendingRequest) -> None:
        now = self._clock.now()
        async with self._sessions.begin() as session:
            confirmed = (
                await session.execute(
                    update(ScheduleSlot)
                    .where(ScheduleSlot.execution_id == request.execution_id, ScheduleSlot.state == "claimed")
                    .values(state="published", published_at=now, lease_until=None)
                    .returning(ScheduleSlot.outcome, ScheduleSlot.detail, ScheduleSlot.trigger, ScheduleSlot.slot_at)
                )
            ).first()
            if confirmed is not None:
                detail = confirmed.detail
                if request.attempts > 1:
                    detail = f"{detail} (published on attempt {request.attempts})"
                outcome, trigger, slot_at = Outcome(confirmed.outcome), confirmed.trigger, confirmed.slot_at
            else:
                # another replica re-published this request after our lease ran out,
                # and confirmed first: the topic holds it twice, with one execution id
                slot = await session.get(ScheduleSlot, request.execution_id)
                assert slot is not None
                outcome, trigger, slot_at = Outcome.DEDUPLICATED, slot.trigger, slot.slot_at
                detail = (
                    f"published again on attempt {request.attempts} after the lease ran out; "
                    "consumers deduplicate it by execution id and event id"
                )
            ledger.record(
                session, workflow_id=request.workflow_id, execution_id=request.execution_id, slot_at=slot_at,
                trigger=trigger, outcome=outcome, detail=detail, recorded_by=self._instance_id, recorded_at=now,
            )
        metrics.observe_fire_delay(request.workflow_id, trigger, slot_at, now)

    async def _record_failure(self, request: PendingRequest, exc: Exception) -> None:
        now = self._clock.now()
        backoff = min(self._lease, timedelta(seconds=2**request.attempts))
        error = f"{type(exc).__name__}: {exc}"[:2000]
        async with self._sessions.begin() as session:
            slot = (
                await session.execute(
                    update(ScheduleSlot)
                    .where(
                        ScheduleSlot.execution_id == request.execution_id,
                        ScheduleSlot.state == "claimed",
                        ScheduleSlot.claimed_by == self._instance_id,
                    )
                    .values(lease_until=now + backoff, last_error=error)
                    .returning(ScheduleSlot.trigger, ScheduleSlot.slot_at)
                )
            ).first()
            if slot is not None:
                ledger.record(
                    session, workflow_id=request.workflow_id, execution_id=request.execution_id,
                    slot_at=slot.slot_at, trigger=slot.trigger, outcome=Outcome.PUBLISH_FAILED,
                    detail=f"publishing attempt {request.attempts} failed ({error}); retried in "
                           f"{int(backoff.total_seconds())}s",
                    recorded_by=self._instance_id, recorded_at=now,
                )


def _trace_context(execution_id: str, workflow_id: str, trigger: str) -> str | None:
    """The traceparent to publish the request with: a span in the trace of the HTTP
    request that triggered the run (a manual trigger), or the root of a new trace (a
    slot the loop decided)."""
    with tracing.span(f"request run {workflow_id}", kind=SpanKind.PRODUCER,
                      attributes={"ibflow.execution_id": execution_id, "ibflow.trigger": trigger}):
        return tracing.current_traceparent()
