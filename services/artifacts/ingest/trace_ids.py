"""The trace id of a run, from the `traceparent` header its records carry.

The scheduler publishes a run's request with the trigger's trace context, and the
signals service sends it on (as a child) with every event of the run, so any record of
a run names its trace. The first one stored wins: a run's trace id never changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from shared.consuming import Record
from shared.tracing import trace_id_in

_SET_TRACE_IDS = text(
    "UPDATE runs SET trace_id = traced.trace_id "
    "FROM jsonb_to_recordset(CAST(:traced AS jsonb)) AS traced(execution_id text, trace_id text) "
    "WHERE runs.execution_id = traced.execution_id AND runs.trace_id IS NULL"
)


def trace_ids_of(records: Iterable[Record]) -> dict[str, str]:
    """Execution id (the record key) -> trace id, for records that carry one."""
    found: dict[str, str] = {}
    for record in records:
        if record.key is None:
            continue
        trace_id = trace_id_in(getattr(record, "headers", None))
        if trace_id is not None:
            found.setdefault(record.key.decode("utf-8", "replace"), trace_id)
    return found


async def store_trace_ids(session_factory: async_sessionmaker, records: Iterable[Record]) -> None:
    """Give runs that have none the trace id of their records (one statement per batch)."""
    found = trace_ids_of(records)
    if not found:
        return
    traced = [{"execution_id": execution_id, "trace_id": trace_id} for execution_id, trace_id in found.items()]
    async with session_factory() as session, session.begin():
        await session.execute(_SET_TRACE_IDS, {"traced": json.dumps(traced)})
