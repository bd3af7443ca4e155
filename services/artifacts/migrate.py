"""Bring this service's tables to the code's Alembic head (`ibflow migrate` calls this)."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from services.artifacts.database import migrations_config, new_engine
from shared.database import head_revision, normalize_database_url

# Two migrators at once (the compose job and a developer) wait for each other.
_MIGRATION_LOCK_KEY = 0x1B_F10_A57


async def migrate(database_url: str) -> str:
    """Upgrade the database to head and return the head revision."""
    url = normalize_database_url(database_url)
    config = migrations_config(url)
    engine = new_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})

            def upgrade(sync_connection) -> None:
                config.attributes["connection"] = sync_connection
                command.upgrade(config, "head")

            await connection.run_sync(upgrade)
    finally:
        await engine.dispose()
    return head_revision(config)
