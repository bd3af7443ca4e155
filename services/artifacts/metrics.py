"""The artifacts service's Prometheus metrics (served at `/metrics`, see shared/metrics.py).

The consumer's per-topic outcomes and lag, and the database pool, are the shared
metrics of `shared/metrics.py`; these are the artifacts service's own.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.artifacts.db.models import RUN_STATUSES, Run
from shared.consuming import Record, Rejected
from shared.metrics import count_events

BATCH_SIZE = Histogram(
    "ibflow_artifacts_batch_size_records",
    "Records in each batch the artifacts consumer stored and committed.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
BATCH_DURATION = Histogram(
    "ibflow_artifacts_batch_duration_seconds",
    "From a fetched batch to its committed offsets: decode, store, dead letters, commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
EVENTS_STORED = Counter(
    "ibflow_artifacts_events_stored_total",
    "Events the artifacts consumer stored for the first time (the store counts a batch as a whole, not per topic).",
    ["consumer"],
)
EVENTS_DUPLICATED = Counter(
    "ibflow_artifacts_events_duplicated_total",
    "Events the artifacts consumer had stored already (a redelivery or a replay): not stored again.",
    ["consumer"],
)
RUNS = Gauge(
    "ibflow_artifacts_runs",
    "Stored runs in each status, by workflow (a grouped count at scrape time).",
    ["workflow", "status"],
)


def observe_batch(consumer: str, records: Sequence[Record], rejected: Sequence[Rejected],
                  stored: int, duplicates: int, seconds: float) -> None:
    """A committed batch: its records that were not dead-lettered count as handled
    (dead letters are counted by the consumer rule that sends them)."""
    dead = {(item.record.topic, item.record.partition, item.record.offset) for item in rejected}
    handled = Tally(record.topic for record in records
                    if (record.topic, record.partition, record.offset) not in dead)
    for topic, amount in handled.items():
        count_events(consumer, topic, "handled", amount)
    if stored:
        EVENTS_STORED.labels(consumer).inc(stored)
    if duplicates:
        EVENTS_DUPLICATED.labels(consumer).inc(duplicates)
    BATCH_SIZE.observe(len(records))
    BATCH_DURATION.observe(seconds)


async def refresh_runs_by_status(sessions: async_sessionmaker) -> None:
    """Runs per workflow and status: one grouped count over the status index."""
    async with sessions() as session:
        rows = (await session.execute(
            select(Run.workflow_id, Run.status, func.count()).group_by(Run.workflow_id, Run.status)
        )).all()
    counts = {(workflow, status): count for workflow, status, count in rows}
    workflows = {workflow for workflow, _ in counts}
    RUNS.clear()
    for workflow in workflows:
        for status in RUN_STATUSES:
            RUNS.labels(workflow, status).set(counts.get((workflow, status), 0))
