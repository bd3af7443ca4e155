"""Reading runs: filtered keyset pages, one run with its steps, the previous successful run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, false, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.artifacts.db.models import Run, RunStep
from services.artifacts.queries.totals import Total, capped_total

# Stored statuses of a run that has not reached an outcome but is expected to.
OPEN_STATUSES = ("queued", "running")
# Steps that ran to an end; a skipped step never ran, so a failed run reads "1 / 4 steps".
RAN_STEP_STATUSES = ("succeeded", "failed")
# When a run last heard of: rows stored before last_event_at existed fall back to opened_at.
LAST_EVENT_AT = func.coalesce(Run.last_event_at, Run.opened_at)


def abandoned_since(run: Run, abandoned_before: datetime | None) -> datetime | None:
    """The time of an open run's last event when that is before `abandoned_before`:
    such a run is shown as `abandoned`. None for any other run."""
    if abandoned_before is None or run.status not in OPEN_STATUSES:
        return None
    last = run.last_event_at or run.opened_at
    return last if last < abandoned_before else None


@dataclass(frozen=True)
class RunFilters:
    workflow_id: str | None = None
    # A stored status, or `abandoned`: open, with no event since `abandoned_before`.
    status: str | None = None
    trigger: str | None = None
    # Compared with the run's place in time: the earliest event of it (requested or started).
    started_after: datetime | None = None
    started_before: datetime | None = None
    abandoned_before: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        equal = {Run.workflow_id: self.workflow_id, Run.trigger: self.trigger}
        conditions = [column == value for column, value in equal.items() if value is not None]
        conditions.extend(self._status_conditions())
        if self.started_after is not None:
            conditions.append(Run.opened_at >= self.started_after)
        if self.started_before is not None:
            conditions.append(Run.opened_at < self.started_before)
        return conditions

    def _status_conditions(self) -> list[ColumnElement[bool]]:
        if self.status is None:
            return []
        if self.status == "abandoned":
            if self.abandoned_before is None:
                return [false()]
            return [Run.status.in_(OPEN_STATUSES), LAST_EVENT_AT < self.abandoned_before]
        conditions = [Run.status == self.status]
        if self.status in OPEN_STATUSES and self.abandoned_before is not None:
            conditions.append(LAST_EVENT_AT >= self.abandoned_before)
        return conditions


@dataclass(frozen=True)
class RunListing:
    run: Run
    steps_total: int
    steps_finished: int


def _step_counts():
    # Correlated per run of the page: a lookup on run_steps' primary key each.
    total = select(func.count()).where(RunStep.execution_id == Run.execution_id).scalar_subquery()
    finished = (
        select(func.count())
        .where(RunStep.execution_id == Run.execution_id, RunStep.status.in_(RAN_STEP_STATUSES))
        .scalar_subquery()
    )
    return total, finished


async def list_runs(
    session: AsyncSession,
    filters: RunFilters,
    limit: int,
    after: tuple[datetime, str] | None,
    total_cap: int,
) -> tuple[list[RunListing], Total, bool]:
    """Newest first; returns the page, the total matching the filters (exact up to
    `total_cap`), and whether more follow."""
    conditions = filters.conditions()
    total_steps, finished_steps = _step_counts()
    query = (
        select(Run, total_steps, finished_steps)
        .where(*conditions)
        .order_by(Run.opened_at.desc(), Run.execution_id.desc())
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(tuple_(Run.opened_at, Run.execution_id) < tuple_(*after))
    rows = (await session.execute(query)).all()
    total = await capped_total(session, Run, conditions, total_cap)
    return [RunListing(*row) for row in rows[:limit]], total, len(rows) > limit


async def get_run(session: AsyncSession, execution_id: str) -> Run | None:
    return await session.scalar(select(Run).where(Run.execution_id == execution_id).options(selectinload(Run.steps)))


async def run_status(session: AsyncSession, execution_id: str) -> str | None:
    return await session.scalar(select(Run.status).where(Run.execution_id == execution_id))
