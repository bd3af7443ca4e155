"""This service's tables to a revision of its Alembic history (`ibflow migrate` calls this):
to the code's head by default, down as well as up."""

from __future__ import annotations

from sqlalchemy import text

from services.artifacts.database import VERSION_TABLE, migrations_config
from shared.database import normalize_database_url
from shared.schema_migration import SchemaStatus, move_schema, schema_status

# Two migrators at once (the compose job and a developer) wait for each other.
_MIGRATION_LOCK_KEY = 0x1B_F10_A57


async def migrate(database_url: str, target: str = "head") -> str | None:
    """Upgrade (or downgrade) the database to `target` and return the revision reached."""
    url = normalize_database_url(database_url)
    lock = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=_MIGRATION_LOCK_KEY)
    return await move_schema(url, migrations_config(url), VERSION_TABLE, lock, target)


async def status(database_url: str) -> SchemaStatus:
    url = normalize_database_url(database_url)
    return await schema_status(url, migrations_config(url), VERSION_TABLE)
