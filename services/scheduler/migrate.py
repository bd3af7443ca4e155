"""`ibflow migrate` for the scheduler's tables: upgrade to the code's head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import create_async_engine

from services.scheduler.rows import VERSION_TABLE
from shared.database import alembic_config, head_revision, normalize_database_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def scheduler_alembic_config(url: URL) -> Config:
    return alembic_config(MIGRATIONS, url, VERSION_TABLE)


async def migrate(database_url: str) -> str:
    """Upgrade the scheduler's tables to head and return the head revision."""
    url = normalize_database_url(database_url)
    config = scheduler_alembic_config(url)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            # two `migrate` jobs started together (replicas, compose) take turns
            await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('ibflow-scheduler-migrations'))"))
            await connection.run_sync(_upgrade, config)
    finally:
        await engine.dispose()
    return head_revision(config)


def _upgrade(connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
