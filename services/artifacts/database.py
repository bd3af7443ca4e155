"""This service's engine, migrations location and schema check."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from shared import bounded_json
from shared.database import alembic_config, require_schema_at_head

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The scheduler keeps its own migrations in the same database, under its own table.
VERSION_TABLE = "alembic_version_artifacts"


def migrations_config(url: URL) -> Config:
    return alembic_config(MIGRATIONS_DIR, url, VERSION_TABLE)


def new_engine(url: URL, *, timeout_seconds: float = 5.0, pool_size: int = 5, max_overflow: int = 5) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        # Bounded connect so /health and start-up answer quickly when the server is gone.
        connect_args={"timeout": timeout_seconds},
        # Rows stored before the event bounds may hold JSON that json.loads cannot read
        # (5,000 levels, 5,000-digit numbers): read under the same rule as the API serves.
        json_deserializer=bounded_json.loads,
    )


def new_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


async def check_schema(engine: AsyncEngine, url: URL) -> tuple[str | None, str | None]:
    """Raise `SchemaMismatchError` naming both revisions unless the database is at head."""
    return await require_schema_at_head(engine, migrations_config(url), VERSION_TABLE)
