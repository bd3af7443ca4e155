"""Reading artifacts: filtered keyset pages, one artifact, pages grouped by execution."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import ColumnElement, Row, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from services.artifacts.db.models import Artifact, Run
from services.artifacts.queries.totals import Total, capped_total


@dataclass(frozen=True)
class ArtifactFilters:
    workflow_id: str | None = None
    execution_id: str | None = None
    step_name: str | None = None
    kind: str | None = None
    dag_id: str | None = None
    task_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        equal = {
            Artifact.workflow_id: self.workflow_id,
            Artifact.execution_id: self.execution_id,
            Artifact.step_name: self.step_name,
            Artifact.kind: self.kind,
            Artifact.dag_id: self.dag_id,
            Artifact.task_id: self.task_id,
        }
        conditions = [column == value for column, value in equal.items() if value is not None]
        if self.created_after is not None:
            conditions.append(Artifact.created_at >= self.created_after)
        if self.created_before is not None:
            conditions.append(Artifact.created_at < self.created_before)
        return conditions


@dataclass(frozen=True)
class ArtifactListing:
    artifact: Artifact
    has_inline_payload: bool


async def list_artifacts(
    session: AsyncSession,
    filters: ArtifactFilters,
    limit: int,
    after: tuple[datetime, UUID] | None,
    total_cap: int,
) -> tuple[list[ArtifactListing], Total, bool]:
    """Newest first; returns the page, the total matching the filters (exact up to
    `total_cap`), and whether more follow. Keyset pages: page 1,000 reads the same few
    index entries as page 1, from the index of the filter (see the 0004 migration)."""
    conditions = filters.conditions()
    query = (
        # Payloads stay in the database: a list shows summaries, up to 500 of them.
        select(Artifact, Artifact.payload.is_not(None))
        .options(defer(Artifact.payload))
        .where(*conditions)
        .order_by(Artifact.created_at.desc(), Artifact.artifact_id.desc())
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(tuple_(Artifact.created_at, Artifact.artifact_id) < tuple_(*after))
    rows = (await session.execute(query)).all()
    total = await capped_total(session, Artifact, conditions, total_cap)
    return [ArtifactListing(row[0], row[1]) for row in rows[:limit]], total, len(rows) > limit


async def get_artifact(session: AsyncSession, artifact_id: UUID) -> Artifact | None:
    return await session.get(Artifact, artifact_id)


@dataclass(frozen=True)
class ExecutionGroup:
    workflow_id: str
    execution_id: str
    run_status: str | None
    artifact_count: int
    kinds: dict[str, int]
    first_created_at: datetime
    last_created_at: datetime


async def list_by_execution(
    session: AsyncSession, filters: ArtifactFilters, limit: int, after: tuple[datetime, str] | None
) -> tuple[list[ExecutionGroup], int, bool]:
    """Executions with their artifacts, the most recently active first."""
    conditions = filters.conditions()
    last_created = func.max(Artifact.created_at)
    query = (
        select(
            func.min(Artifact.workflow_id),
            Artifact.execution_id,
            func.count(),
            func.min(Artifact.created_at),
            last_created,
        )
        .where(*conditions)
        .group_by(Artifact.execution_id)
        .order_by(last_created.desc(), Artifact.execution_id.desc())
        .limit(limit + 1)
    )
    if after is not None:
        query = query.having(tuple_(last_created, Artifact.execution_id) < tuple_(*after))
    rows: list[Row] = list((await session.execute(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    execution_ids = [row[1] for row in rows]
    kinds: dict[str, dict[str, int]] = {execution_id: {} for execution_id in execution_ids}
    statuses: dict[str, str] = {}
    if execution_ids:
        kind_rows = await session.execute(
            select(Artifact.execution_id, Artifact.kind, func.count())
            .where(Artifact.execution_id.in_(execution_ids), *conditions)
            .group_by(Artifact.execution_id, Artifact.kind)
            .order_by(Artifact.execution_id, Artifact.kind)
        )
        for execution_id, kind, count in kind_rows:
            kinds[execution_id][kind] = count
        status_rows = await session.execute(
            select(Run.execution_id, Run.status).where(Run.execution_id.in_(execution_ids))
        )
        statuses = dict(status_rows.all())
    total = await session.scalar(select(func.count(func.distinct(Artifact.execution_id))).where(*conditions))
    groups = [
        ExecutionGroup(
            workflow_id=workflow_id,
            execution_id=execution_id,
            run_status=statuses.get(execution_id),
            artifact_count=count,
            kinds=kinds[execution_id],
            first_created_at=first,
            last_created_at=last,
        )
        for workflow_id, execution_id, count, first, last in rows
    ]
    return groups, total or 0, more


async def latest_inline_artifact(session: AsyncSession, execution_id: str, kind: str) -> Artifact | None:
    """The run's most recent artifact of `kind` with an inline payload."""
    return await session.scalar(
        select(Artifact)
        .where(Artifact.execution_id == execution_id, Artifact.kind == kind, Artifact.payload.is_not(None))
        .order_by(Artifact.created_at.desc(), Artifact.artifact_id.desc())
        .limit(1)
    )
