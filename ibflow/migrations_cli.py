"""`ibflow migrate`: every service's tables to the code's head, or `--to` any revision
(down too), or `--status`.

Services that keep state have their own Alembic histories (`ibflow/services.py`,
MIGRATIONS); a revision id names its service, so `--to a7c1e2f40003` needs no
`--service`. Downgrades run each migration's `downgrade()`, which may drop what the
older schema cannot hold: the command says what it will do and asks first.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console

from ibflow.services import MIGRATIONS
from ibflow.terminal_table import print_table
from shared.schema_migration import SchemaStatus, UnknownRevisionError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_AT_HEAD = 1


class MigrationRefused(Exception):
    """The command cannot do what was asked; the message says why and what to do."""


def _module(service: str):
    return importlib.import_module(MIGRATIONS[service])


async def statuses(database_url: str, services: list[str]) -> dict[str, SchemaStatus]:
    return {service: await _module(service).status(database_url) for service in services}


@dataclass(frozen=True)
class Move:
    service: str
    current: str | None
    target: str | None
    direction: str


def plan(found: dict[str, SchemaStatus], target: str, service: str | None) -> list[Move]:
    """What `--to target` does to each service. A revision id picks its own service;
    head and base (and +N/-N with --service) apply to the services asked for."""
    if service is None and target not in ("head", "base"):
        owners = [name for name, status in found.items() if status.has(target)]
        if not owners:
            raise MigrationRefused(f"no service's history has a revision {target!r}; `ibflow migrate --status` "
                                   "lists them")
        if len(owners) > 1:
            raise MigrationRefused(f"{target!r} could be a revision of {' or '.join(owners)}: add --service")
        found = {owners[0]: found[owners[0]]}
    moves = []
    for name, status in found.items():
        try:
            moves.append(Move(name, status.current, status.resolve(target), status.direction_to(target)))
        except UnknownRevisionError as exc:
            raise MigrationRefused(f"{name}: {exc}") from None
    return moves


def describe(move: Move) -> str:
    current, target = move.current or "<none>", move.target or "base (no tables)"
    if move.direction == "none":
        return f"{move.service}: at {current}, nothing to do"
    word = "upgrade" if move.direction == "up" else "downgrade"
    return f"{move.service}: {word} {current} -> {target}"


def migrate_to(database_url: str, target: str, service: str | None, *, yes: bool, console: Console,
               confirm: Callable[[str], bool]) -> int:
    services = [service] if service else list(MIGRATIONS)
    moves = plan(asyncio.run(statuses(database_url, services)), target, service)
    downgrades = [m for m in moves if m.direction == "down"]
    for move in moves:
        console.print(describe(move), markup=False, highlight=False)
    if downgrades and not yes:
        question = ("Downgrade? Each step runs its migration's downgrade(): what the older schema has no place "
                    "for is dropped or folded (see the migration's notes).")
        if not confirm(question):
            raise MigrationRefused("not migrated (pass --yes to downgrade without asking)")
    for move in moves:
        if move.direction == "none":
            continue
        reached = asyncio.run(_module(move.service).migrate(database_url, move.target or "base"))
        console.print(f"{move.service}: at {reached or '<none>'}", markup=False, highlight=False)
    return EXIT_OK


STATUS_COLUMNS = ("service", "revision", "state", "description")


def status_rows(found: dict[str, SchemaStatus]) -> list[tuple[str, str, str, str]]:
    rows = []
    for service, status in found.items():
        if not status.known:
            rows.append((service, status.current or "", "unknown", "the database is at a revision this code "
                                                                   "does not know: a newer release migrated it"))
        for revision in status.revisions:
            state = "current" if revision.revision == status.current else ("applied" if revision.applied
                                                                            else "pending")
            rows.append((service, revision.revision, state, revision.description))
    return rows


def summary(service: str, status: SchemaStatus) -> str:
    pending = sum(1 for r in status.revisions if not r.applied)
    if status.at_head:
        return f"{service}: at head {status.head}"
    if not status.known:
        return f"{service}: at {status.current}, unknown to this code (head {status.head})"
    return f"{service}: at {status.current or '<none>'}, head {status.head}: {pending} to apply (`ibflow migrate`)"


def show_status(database_url: str, service: str | None, console: Console) -> int:
    found = asyncio.run(statuses(database_url, [service] if service else list(MIGRATIONS)))
    print_table(console, STATUS_COLUMNS, status_rows(found),
                style=lambda column, cell: {"current": "green", "pending": "yellow", "unknown": "red"}.get(cell, "")
                if column == "state" else "")
    for name, status in found.items():
        console.print(summary(name, status), markup=False, highlight=False)
    return EXIT_OK if all(status.at_head for status in found.values()) else EXIT_NOT_AT_HEAD
