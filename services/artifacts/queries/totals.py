"""Totals of filtered lists, exact up to a cap and a lower bound beyond it.

Counting every match made a list's cost grow with the table: at a million artifacts the
`count(*)` of an unfiltered page took some 500 times longer than the page itself.
Counting stops at `cap + 1` matches instead, each read from the index the filter has,
so a total costs the same at ten thousand rows and at ten million.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class Total:
    """`count` matches if `exact`; otherwise more than `count` (which is then the cap)."""

    count: int
    exact: bool


async def capped_total(session: AsyncSession, model: type, conditions: list[ColumnElement[bool]], cap: int) -> Total:
    matching = select(literal_column("1")).select_from(model).where(*conditions).limit(cap + 1).subquery()
    counted = await session.scalar(select(func.count()).select_from(matching)) or 0
    return Total(count=min(counted, cap), exact=counted <= cap)
