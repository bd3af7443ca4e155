"""A synthetic ingest: many executions' log lines and artifacts, and how much of it is stored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from shared.events import ArtifactCreated, Event, LogRecorded
from tests.chaos.chaos_db import fetch, fetch_value

WORKFLOW = "chaos_ingest"


def ingest_events(prefix: str, executions: int, logs: int, artifacts: int) -> list[Event]:
    """Each execution's logs then artifacts, interleaved across executions (and so across
    partitions); execution n is `{prefix}-{n:03d}`."""
    per_execution = []
    for n in range(executions):
        ids = {"workflow_id": WORKFLOW, "execution_id": f"{prefix}-{n:03d}", "step_name": "ingest"}
        events: list[Event] = [LogRecorded(**ids, message=f"line {i}", fields={"i": i}) for i in range(logs)]
        events += [ArtifactCreated(**ids, name=f"artifact {i}", kind="dataset", payload={"i": i})
                   for i in range(artifacts)]
        per_execution.append(events)
    return [events[i] for i in range(logs + artifacts) for events in per_execution]


async def send_all(producer: AIOKafkaProducer, events: Sequence[Event]) -> None:
    await asyncio.gather(*[await producer.send(e.topic, e.to_bytes(), key=e.key) for e in events])


async def stored(database_url: str, prefix: str) -> int:
    return await fetch_value(
        database_url,
        "SELECT (SELECT count(*) FROM artifacts WHERE execution_id LIKE $1)"
        " + (SELECT count(*) FROM log_records WHERE execution_id LIKE $1)",
        f"{prefix}-%",
    )


async def wait_all_stored(database_url: str, prefix: str, total: int, timeout: float = 240) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    count = 0
    while loop.time() < deadline:
        count = await stored(database_url, prefix)
        if count >= total:
            return count
        await asyncio.sleep(0.5)
    raise AssertionError(f"only {count} of {total} events stored within {timeout:.0f}s")


async def stored_exactly_once(database_url: str, prefix: str, events: Sequence[Event]) -> dict:
    """What the database holds of `events`: every event id once, and run counters that
    moved only for events stored the first time (a redelivery counted twice shows here)."""
    rows = await fetch(
        database_url,
        "SELECT event_id FROM artifacts WHERE execution_id LIKE $1"
        " UNION ALL SELECT event_id FROM log_records WHERE execution_id LIKE $1",
        f"{prefix}-%",
    )
    ids = [row["event_id"] for row in rows]
    totals = (await fetch(
        database_url,
        "SELECT count(*) AS runs, coalesce(sum(log_count), 0) AS logs, coalesce(sum(artifact_count), 0) AS artifacts"
        " FROM runs WHERE execution_id LIKE $1",
        f"{prefix}-%",
    ))[0]
    return {
        "rows": len(ids),
        "distinct": len(set(ids)),
        "missing": len({e.event_id for e in events} - set(ids)),
        "unexpected": len(set(ids) - {e.event_id for e in events}),
        "runs": totals["runs"],
        "log_count": totals["logs"],
        "artifact_count": totals["artifacts"],
    }


def expected_once(events: Sequence[Event]) -> dict:
    logs = sum(isinstance(e, LogRecorded) for e in events)
    return {
        "rows": len(events), "distinct": len(events), "missing": 0, "unexpected": 0,
        "runs": len({e.execution_id for e in events}), "log_count": logs, "artifact_count": len(events) - logs,
    }
