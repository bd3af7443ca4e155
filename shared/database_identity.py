"""Which database a service is really connected to, as the server itself says.

A URL names a host as the service was told it; two URLs can name one server in
different words (`localhost`, `127.0.0.1`, a container name), and one URL can reach a
different server than someone thinks. The server's answer settles it: its database
and user for this connection, its address and port, and its cluster's system
identifier (unique per PostgreSQL cluster, where the role may read it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

_CONNECTION = text("SELECT current_database(), current_user, host(inet_server_addr()), inet_server_port()")
_CLUSTER = text("SELECT system_identifier::text FROM pg_control_system()")


async def connected_server(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as connection:
        database, user, address, port = (await connection.execute(_CONNECTION)).one()
        try:
            async with connection.begin_nested():
                system_identifier = await connection.scalar(_CLUSTER)
        except DBAPIError:  # a managed server may not let the role read it
            system_identifier = None
    return {"database": database, "user": user, "address": address, "port": port,
            "system_identifier": system_identifier}


def same_database(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    """Whether two `connected_server` answers are one database; None when they cannot tell."""
    if a.get("system_identifier") and b.get("system_identifier"):
        return (a["system_identifier"], a.get("database")) == (b["system_identifier"], b.get("database"))
    return None
