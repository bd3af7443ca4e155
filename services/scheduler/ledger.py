"""The ledger: one entry for each thing that happened to a slot or a manual trigger."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler.metrics import count_outcome_on_commit
from services.scheduler.rows import LedgerEntry
from services.scheduler.slot_decisions import Outcome, SkipReason


def record(
    session: AsyncSession,
    *,
    workflow_id: str,
    execution_id: str | None,
    slot_at: datetime,
    trigger: str,
    outcome: Outcome,
    reason: SkipReason | None = None,
    detail: str = "",
    recorded_by: str,
    recorded_at: datetime,
) -> None:
    session.add(
        LedgerEntry(
            workflow_id=workflow_id,
            execution_id=execution_id,
            slot_at=slot_at,
            trigger=trigger,
            outcome=str(outcome),
            reason=str(reason) if reason is not None else None,
            detail=detail,
            recorded_by=recorded_by,
            recorded_at=recorded_at,
        )
    )
    count_outcome_on_commit(getattr(session, "sync_session", session), workflow=workflow_id, trigger=trigger,
                            outcome=str(outcome))


async def entries_page(
    session: AsyncSession,
    workflow_id: str,
    *,
    limit: int,
    before_id: int | None = None,
    outcome: str | None = None,
    execution_id: str | None = None,
) -> list[LedgerEntry]:
    """Newest first; `before_id` continues a previous page."""
    query = select(LedgerEntry).where(LedgerEntry.workflow_id == workflow_id)
    if before_id is not None:
        query = query.where(LedgerEntry.id < before_id)
    if outcome is not None:
        query = query.where(LedgerEntry.outcome == outcome)
    if execution_id is not None:
        query = query.where(LedgerEntry.execution_id == execution_id)
    return list((await session.scalars(query.order_by(LedgerEntry.id.desc()).limit(limit))).all())
