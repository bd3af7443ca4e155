"""Reading a run's log records: time-ordered keyset pages, and new records for live follow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Text, bindparam, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.artifacts.db.models import LOG_LEVELS, LogRecord


@dataclass(frozen=True)
class LogFilters:
    step_name: str | None = None
    min_level: str | None = None
    text: str | None = None

    def conditions(self, execution_id: str) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = [LogRecord.execution_id == execution_id]
        if self.step_name is not None:
            conditions.append(LogRecord.step_name == self.step_name)
        if self.min_level is not None:
            conditions.append(LogRecord.level_no >= LOG_LEVELS[self.min_level])
        if self.text:
            escaped = self.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            # The pattern is written into the statement, not bound: a prepared statement
            # falls back to one generic plan after a few runs, and no single plan serves
            # both a text on one line (the trigram index finds it) and a text on every
            # tenth line (reading the run in order finds 200 soonest). PostgreSQL plans
            # each search for its own text this way.
            pattern = bindparam("text_pattern", f"%{escaped}%", type_=Text, literal_execute=True)
            conditions.append(LogRecord.message.ilike(pattern, escape="\\"))
        return conditions


async def list_logs(
    session: AsyncSession, execution_id: str, filters: LogFilters, limit: int, after: tuple[datetime, int] | None
) -> tuple[list[LogRecord], bool]:
    """Oldest first, keyset on (occurred_at, id) along `idx_log_records_execution_time`."""
    query = (
        select(LogRecord)
        .where(*filters.conditions(execution_id))
        .order_by(LogRecord.occurred_at, LogRecord.id)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(tuple_(LogRecord.occurred_at, LogRecord.id) > tuple_(*after))
    rows = list((await session.scalars(query)).all())
    return rows[:limit], len(rows) > limit


async def logs_stored_after(
    session: AsyncSession, execution_id: str, filters: LogFilters, after_id: int, limit: int
) -> list[LogRecord]:
    """Records stored after the one with id `after_id`, in the order they were stored.

    Live follow goes by id, not time: a record that arrives late with an earlier
    occurred_at still gets a higher id, so the follower never misses it. Ids of one run
    rise in commit order because one consumer (the owner of the run's partition) writes
    them, one transaction at a time.
    """
    query = (
        select(LogRecord)
        .where(*filters.conditions(execution_id), LogRecord.id > after_id)
        .order_by(LogRecord.id)
        .limit(limit)
    )
    return list((await session.scalars(query)).all())
