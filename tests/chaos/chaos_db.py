"""Counting what the services stored, straight from PostgreSQL."""

from __future__ import annotations

from typing import Any

import asyncpg


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        return await connection.fetch(query, *args, timeout=30)
    finally:
        await connection.close()


async def fetch_value(database_url: str, query: str, *args: Any) -> Any:
    rows = await fetch(database_url, query, *args)
    return rows[0][0] if rows else None
