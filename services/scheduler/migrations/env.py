"""Alembic environment of the scheduler's tables (version table `alembic_version_scheduler`).

`services.scheduler.migrate.migrate` hands in an open connection; the `alembic` command
line works too, with `-x url=...` or the `sqlalchemy.url` main option.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from services.scheduler.rows import VERSION_TABLE, Base

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=config.get_main_option("version_table") or VERSION_TABLE,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_with_own_engine(context.get_x_argument(as_dictionary=True).get("url")
                                     or config.get_main_option("sqlalchemy.url")))
