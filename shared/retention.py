"""The periodic retention job a service that keeps data runs, and its ledger.

Each service owns its rules (what expires, what must stay) and hands the job a
`sweep`: a coroutine that deletes in bounded batches, one short transaction each, and
returns one `Removal` per rule it applied. The job runs it every
`RETENTION_INTERVAL_SECONDS`, writes a ledger row for every rule that removed
something (or failed), logs one line per such rule, and counts it in the
`ibflow_retention_*` metrics.

Replicas of one service share the database: a PostgreSQL advisory lock (tried, never
waited for) lets one of them sweep at a time; the others skip that round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field
from sqlalchemy import Table, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.settings import IbflowSettings

log = logging.getLogger(__name__)

REMOVED = Counter("ibflow_retention_removed_total",
                  "Rows (or store blobs) retention deleted, by service and target (table, or blobs).",
                  ["service", "target"])
REMOVED_BYTES = Counter("ibflow_retention_removed_bytes_total",
                        "Bytes of store blobs retention deleted.", ["service", "target"])
RULE_FAILURES = Counter("ibflow_retention_rule_failures_total",
                        "Retention rules that failed in a sweep (the next sweep tries again).", ["service", "target"])
SWEEP_DURATION = Histogram("ibflow_retention_sweep_duration_seconds", "Time of one retention sweep, every rule.",
                           ["service"], buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600))
LAST_SWEEP = Gauge("ibflow_retention_last_sweep_timestamp_seconds",
                   "When the last retention sweep of this process ended (Unix time).", ["service"])


class RetentionTiming(IbflowSettings):
    """How often retention runs and how much one transaction deletes."""

    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    # Rows per DELETE transaction: short transactions leave ingest's locks free.
    retention_batch_rows: int = Field(default=5000, ge=1, le=100_000)
    # The first sweep waits this long after start-up, so a restart storm does not sweep.
    retention_first_sweep_delay_seconds: float = Field(default=60.0, ge=0)


@dataclass
class Removal:
    """What one rule removed in one sweep."""

    target: str
    rule: str
    cutoff: datetime | None = None
    removed: int = 0
    removed_bytes: int | None = None
    batches: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def ledger_row(self, started_at: datetime, finished_at: datetime) -> dict[str, Any]:
        return {
            "started_at": started_at,
            "finished_at": finished_at,
            "target": self.target,
            "rule": self.rule,
            "cutoff": self.cutoff,
            "removed": self.removed,
            "removed_bytes": self.removed_bytes,
            "batches": self.batches,
            "detail": self.detail,
            "error": self.error,
        }


Sweep = Callable[[], Awaitable[list[Removal]]]


async def in_batches(batch: Callable[[], Awaitable[int]], removal: Removal) -> Removal:
    """Call `batch` (one transaction that deletes at most one batch and says how many)
    until it deletes nothing; counts go into `removal`. Each round yields to the event
    loop, so the service's requests and consumer go on between transactions."""
    while True:
        removed = await batch()
        if removed == 0:
            return removal
        removal.removed += removed
        removal.batches += 1
        await asyncio.sleep(0)


class RetentionJob:
    """Runs `sweep` every interval under an advisory lock; see the module docstring."""

    def __init__(self, *, service: str, engine: AsyncEngine, ledger: Table, sweep: Sweep,
                 timing: RetentionTiming, rules: list[str]) -> None:
        self.service = service
        self._engine = engine
        self._ledger = ledger
        self._sweep = sweep
        self._timing = timing
        self.rules = rules
        self._task: asyncio.Task | None = None
        self.last_sweep_at: datetime | None = None
        self.last_error: str | None = None

    def start(self) -> RetentionJob:
        if not self.rules:
            log.info("retention is off: nothing is deleted (no RETENTION_* setting is set)",
                     extra={"service": self.service})
            return self
        log.info("retention on", extra={"rules": self.rules, "interval_seconds": self._timing.retention_interval_seconds})
        self._task = asyncio.create_task(self._run(), name=f"{self.service}-retention")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(self._timing.retention_first_sweep_delay_seconds)
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the next round tries again; the log says why
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("retention sweep failed; trying again next round", extra={"error": self.last_error})
            await asyncio.sleep(self._timing.retention_interval_seconds)

    async def run_once(self) -> list[Removal] | None:
        """One sweep, unless another replica holds the lock (then None)."""
        key = f"ibflow-{self.service}-retention"
        async with self._engine.connect() as lock:
            locked = await lock.scalar(text("SELECT pg_try_advisory_lock(hashtext(:key))"), {"key": key})
            await lock.commit()
            if not locked:
                log.info("retention skipped: another replica is sweeping")
                return None
            try:
                return await self._sweep_and_record()
            finally:
                await lock.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": key})
                await lock.commit()

    async def _sweep_and_record(self) -> list[Removal]:
        started_at = datetime.now(UTC)
        began = time.monotonic()
        removals = await self._sweep()
        finished_at = datetime.now(UTC)
        worth_recording = [r for r in removals if r.removed or r.error]
        if worth_recording:
            async with self._engine.begin() as conn:
                await conn.execute(insert(self._ledger), [r.ledger_row(started_at, finished_at) for r in worth_recording])
        SWEEP_DURATION.labels(self.service).observe(time.monotonic() - began)
        LAST_SWEEP.labels(self.service).set(finished_at.timestamp())
        for removal in removals:
            REMOVED.labels(self.service, removal.target).inc(removal.removed)
            if removal.removed_bytes:
                REMOVED_BYTES.labels(self.service, removal.target).inc(removal.removed_bytes)
            if removal.error:
                RULE_FAILURES.labels(self.service, removal.target).inc()
            fields = {"target": removal.target, "rule": removal.rule, "removed": removal.removed,
                      "cutoff": removal.cutoff.isoformat() if removal.cutoff else None}
            if removal.removed_bytes is not None:
                fields["removed_bytes"] = removal.removed_bytes
            if removal.error:
                log.warning("retention rule failed", extra=fields | {"error": removal.error})
            elif removal.removed:
                log.info("retention removed expired data", extra=fields | {"batches": removal.batches})
        self.last_sweep_at = finished_at
        self.last_error = next((r.error for r in removals if r.error), None)
        log.info("retention sweep done", extra={"seconds": round(time.monotonic() - began, 3),
                                                 "removed": sum(r.removed for r in removals)})
        return removals
