"""`ibflow migrate` for the scheduler's tables: to the code's head by default, down as well as up."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy import URL, text

from services.scheduler.rows import VERSION_TABLE
from shared.database import alembic_config, normalize_database_url
from shared.schema_migration import SchemaStatus, move_schema, schema_status

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def scheduler_alembic_config(url: URL) -> Config:
    return alembic_config(MIGRATIONS, url, VERSION_TABLE)


async def migrate(database_url: str, target: str = "head") -> str | None:
    """Upgrade (or downgrade) the scheduler's tables to `target`; the revision reached."""
    url = normalize_database_url(database_url)
    # two `migrate` jobs started together (replicas, compose) take turns
    lock = text("SELECT pg_advisory_xact_lock(hashtext('ibflow-scheduler-migrations'))")
    return await move_schema(url, scheduler_alembic_config(url), VERSION_TABLE, lock, target)


async def status(database_url: str) -> SchemaStatus:
    url = normalize_database_url(database_url)
    return await schema_status(url, scheduler_alembic_config(url), VERSION_TABLE)
