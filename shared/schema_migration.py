"""Moving a service's tables to any revision of its Alembic history, up or down, and
saying where they are: what `ibflow migrate [--to REVISION] [--status]` runs.

Each service that keeps state has its own history and version table; the service's
`migrate.py` hands its Alembic config and the advisory lock that keeps two migrators
from running at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, TextClause
from sqlalchemy.ext.asyncio import create_async_engine

Direction = Literal["up", "down", "none"]
_RELATIVE = re.compile(r"[+-]\d+")


class UnknownRevisionError(ValueError):
    """The target names no revision of this service's history."""


@dataclass(frozen=True)
class RevisionInfo:
    revision: str
    down_revision: str | None
    description: str
    applied: bool


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str | None
    # oldest first
    revisions: list[RevisionInfo]

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def known(self) -> bool:
        """False when the database is at a revision this code has never heard of (a newer release's)."""
        return self.current is None or self.current in self._order

    @property
    def _order(self) -> list[str]:
        return [r.revision for r in self.revisions]

    def has(self, target: str) -> bool:
        """Whether `target` names a revision of this history (or head, base, +N, -N)."""
        try:
            self.resolve(target)
        except UnknownRevisionError:
            return False
        return True

    def resolve(self, target: str) -> str | None:
        """The revision `target` names: `head`, `base` (None), a revision or a unique
        prefix of one, `+N` / `-N` steps from the current one. The histories are linear."""
        order = self._order
        if target == "head":
            return self.head
        if target == "base":
            return None
        if _RELATIVE.fullmatch(target):
            if not self.known:
                raise UnknownRevisionError(f"the database is at {self.current}, which this code does not know")
            at = order.index(self.current) if self.current is not None else -1
            wanted = at + int(target)
            if not -1 <= wanted < len(order):
                raise UnknownRevisionError(f"{target} from {self.current or 'base'} goes past the history's ends")
            return order[wanted] if wanted >= 0 else None
        matches = [revision for revision in order if revision.startswith(target)]
        if target in order:
            return target
        if len(matches) != 1:
            why = "names no revision" if not matches else f"could be any of {', '.join(matches)}"
            raise UnknownRevisionError(f"{target!r} {why}; the revisions are {', '.join(order)}")
        return matches[0]

    def direction_to(self, target: str) -> Direction:
        wanted = self.resolve(target)
        if wanted == self.current:
            return "none"
        if not self.known:
            raise UnknownRevisionError(
                f"the database is at {self.current}, which this code does not know: it was migrated by a newer "
                "release; run that release's `ibflow migrate --to` to come down")
        order = [None, *self._order]
        return "down" if order.index(wanted) < order.index(self.current) else "up"


def history(config: Config) -> list[tuple[str, str | None, str]]:
    """(revision, down revision, first line of its description), oldest first."""
    script = ScriptDirectory.from_config(config)
    walked = list(script.walk_revisions())
    return [(r.revision, _single(r.down_revision), (r.doc or "").strip().splitlines()[0] if r.doc else "")
            for r in reversed(walked)]


def _single(down_revision) -> str | None:
    if isinstance(down_revision, tuple | list):
        return ",".join(down_revision)
    return down_revision


def current_revision(sync_connection, version_table: str) -> str | None:
    return MigrationContext.configure(sync_connection, opts={"version_table": version_table}).get_current_revision()


def status_of(config: Config, current: str | None) -> SchemaStatus:
    revisions = history(config)
    order = [revision for revision, _, _ in revisions]
    applied = set(order[: order.index(current) + 1]) if current in order else set()
    return SchemaStatus(current=current, head=order[-1] if order else None, revisions=[
        RevisionInfo(revision, down, description, revision in applied) for revision, down, description in revisions
    ])


async def move_schema(url: URL, config: Config, version_table: str, lock: TextClause, target: str) -> str | None:
    """Upgrade or downgrade to `target` (a revision, `head`, `base`, `+N`/`-N`) in one
    transaction, under `lock`; the revision reached."""
    engine = create_async_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(lock)

            def move(sync_connection) -> str | None:
                config.attributes["connection"] = sync_connection
                status = status_of(config, current_revision(sync_connection, version_table))
                way, wanted = status.direction_to(target), status.resolve(target)
                if way == "up":
                    command.upgrade(config, wanted or "base")
                elif way == "down":
                    command.downgrade(config, wanted or "base")
                return current_revision(sync_connection, version_table)

            return await connection.run_sync(move)
    finally:
        await engine.dispose()


async def schema_status(url: URL, config: Config, version_table: str) -> SchemaStatus:
    engine = create_async_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(lambda sync: current_revision(sync, version_table))
    finally:
        await engine.dispose()
    return status_of(config, current)
