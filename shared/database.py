"""Database plumbing for the services that keep state: URL forms, masking, schema check.

`DATABASE_URL` accepts what people paste: `postgresql://`, `postgres://`, and the
SQLAlchemy driver forms (`postgresql+asyncpg://`, the old system's
`postgresql+psycopg2://`). All of them become one asyncpg URL here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine

ASYNC_DRIVER = "postgresql+asyncpg"
_POSTGRES_SCHEMES = {"postgres", "postgresql"}


class DatabaseUrlError(ValueError):
    pass


class SchemaMismatchError(RuntimeError):
    """The database is not at the code's Alembic head: refuse to serve."""


def normalize_database_url(raw: str) -> URL:
    try:
        url = make_url(raw.strip())
    except ArgumentError:
        raise DatabaseUrlError(
            "DATABASE_URL is not a URL; expected postgresql://user:password@host:port/database"
        ) from None
    scheme = url.drivername.split("+", 1)[0]
    if scheme not in _POSTGRES_SCHEMES:
        raise DatabaseUrlError(f"DATABASE_URL must point to PostgreSQL, not {scheme!r}")
    query = dict(url.query)
    if "sslmode" in query:
        # libpq's parameter; asyncpg takes the same values under the name `ssl`
        query["ssl"] = query.pop("sslmode")
    return url.set(drivername=ASYNC_DRIVER, query=query)


def describe_database(url: URL) -> dict[str, Any]:
    """Where the service is connected, safe to show: the password is masked."""
    return {
        "host": url.host or "localhost",
        "port": url.port or 5432,
        "database": url.database,
        "user": url.username,
        "url": url.render_as_string(hide_password=True),
    }


def alembic_config(script_location: Path, url: URL, version_table: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    # Alembic's ini interpolation would treat a % in a password as a reference.
    config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    config.set_main_option("version_table", version_table)
    return config


def head_revision(config: Config) -> str | None:
    return ScriptDirectory.from_config(config).get_current_head()


async def database_revision(engine: AsyncEngine, version_table: str) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(
                sync_conn, opts={"version_table": version_table}
            ).get_current_revision()
        )


async def require_schema_at_head(engine: AsyncEngine, config: Config, version_table: str) -> tuple[str | None, str | None]:
    current = await database_revision(engine, version_table)
    head = head_revision(config)
    if current != head:
        raise SchemaMismatchError(
            f"database schema is at revision {current or '<none>'} but this code needs {head}; "
            "run `ibflow migrate` (or the compose migrate job) first"
        )
    return current, head
