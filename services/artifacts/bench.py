"""Benchmark: a run with 50,000 log records stays usable (issue 5, item 3).

Stores `records` log records of one run through the consumer's own write path
(`store_batch`, in batches), serves the API from a real uvicorn server on a free
loopback port, and times the log pages a person opens: the first page, a level
filter, a text search and a few pages deep by cursor. It prints the figures and
returns them; it asserts nothing about speed (that is for a person to judge).

    python -m services.artifacts.bench [--database-url URL] [--records 50000]

`make bench` calls `run_log_bench(database_url)`. The database is migrated to head
first; the benchmark's run is deleted afterwards unless `keep=True`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import delete, text

from services.artifacts.database import new_engine, new_sessionmaker
from services.artifacts.db.models import LogRecord, Run
from services.artifacts.ingest.store import store_batch
from services.artifacts.main import create_app
from services.artifacts.migrate import migrate
from services.artifacts.settings import ArtifactsSettings
from shared.database import normalize_database_url
from shared.events import LogRecorded
from shared.http import serving

WORKFLOW_ID = "ibkr_trading_signal_workflow"
STEPS = ("fetch_market_data", "compute_features", "generate_signals", "publish_signals")
LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR")
WRITE_BATCH = 2_000


@dataclass
class Timing:
    name: str
    path: str
    rows: int
    median_ms: float
    p95_ms: float
    max_ms: float


@dataclass
class LogBenchResult:
    execution_id: str
    records: int
    insert_seconds: float
    insert_records_per_second: float
    first_page_uses_index: bool
    timings: list[Timing] = field(default_factory=list)


def _log_events(execution_id: str, records: int) -> list[LogRecorded]:
    start = datetime.now(UTC) - timedelta(seconds=records)
    return [
        LogRecorded(
            workflow_id=WORKFLOW_ID,
            execution_id=execution_id,
            step_name=STEPS[i * len(STEPS) // records],
            occurred_at=start + timedelta(seconds=i, microseconds=i % 997),
            level=LEVELS[i % len(LEVELS)],
            message=f"processed bar {i} for {('AAPL', 'MSFT', 'IBM', 'GOOG')[i % 4]}",
            logger="ibflow.signals.bench",
            fields={"i": i, "symbol": ("AAPL", "MSFT", "IBM", "GOOG")[i % 4], "bars": i % 250},
        )
        for i in range(records)
    ]


async def _insert(database_url: str, execution_id: str, records: int) -> float:
    engine = new_engine(normalize_database_url(database_url))
    sessions = new_sessionmaker(engine)
    events = _log_events(execution_id, records)
    started = time.perf_counter()
    try:
        for offset in range(0, len(events), WRITE_BATCH):
            async with sessions() as session, session.begin():
                await store_batch(session, events[offset : offset + WRITE_BATCH])
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE log_records"))
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def _first_page_uses_index(database_url: str, execution_id: str) -> bool:
    engine = new_engine(normalize_database_url(database_url))
    try:
        async with engine.connect() as conn:
            plan = await conn.execute(
                text("EXPLAIN SELECT * FROM log_records WHERE execution_id = :e ORDER BY occurred_at, id LIMIT 201"),
                {"e": execution_id},
            )
            return any("idx_log_records_execution_time" in line for (line,) in plan)
    finally:
        await engine.dispose()


async def _delete(database_url: str, execution_id: str) -> None:
    engine = new_engine(normalize_database_url(database_url))
    try:
        async with new_sessionmaker(engine)() as session, session.begin():
            await session.execute(delete(LogRecord).where(LogRecord.execution_id == execution_id))
            await session.execute(delete(Run).where(Run.execution_id == execution_id))
    finally:
        await engine.dispose()


async def _time(client: httpx.AsyncClient, name: str, path: str, repeats: int, rows_key: str | None) -> Timing:
    samples = []
    rows = 0
    for _ in range(repeats):
        started = time.perf_counter()
        response = await client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        rows = len(response.json()[rows_key]) if rows_key else 1
    samples.sort()
    return Timing(
        name=name,
        path=path,
        rows=rows,
        median_ms=round(statistics.median(samples), 2),
        p95_ms=round(samples[min(len(samples) - 1, int(len(samples) * 0.95))], 2),
        max_ms=round(samples[-1], 2),
    )


async def _time_api(database_url: str, execution_id: str, repeats: int) -> list[Timing]:
    settings = ArtifactsSettings(database_url=database_url, artifacts_consumer_enabled=False, log_level="WARNING")
    async with serving(create_app(settings)) as base_url:
        logs = f"/api/runs/{execution_id}/logs"
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            timings = [
                await _time(client, "first page (200)", f"{logs}?limit=200", repeats, "logs"),
                await _time(client, "first page, level >= WARNING", f"{logs}?limit=200&level=WARNING", repeats, "logs"),
                await _time(client, "first page, one step", f"{logs}?limit=200&step={STEPS[-1]}", repeats, "logs"),
                await _time(client, "text search 'bar 4999'", f"{logs}?limit=200&q=bar%204999", repeats, "logs"),
                await _time(client, "run detail", f"/api/runs/{execution_id}", repeats, None),
                await _time(client, "runs list", "/api/runs?limit=50", repeats, "runs"),
            ]
            deep_path, pages = f"{logs}?limit=200", 1
            while pages < 11 and (cursor := (await client.get(deep_path)).json()["next_cursor"]):
                deep_path, pages = f"{logs}?limit=200&cursor={cursor}", pages + 1
            timings.append(await _time(client, f"page {pages} by cursor", deep_path, repeats, "logs"))
            return timings


async def run_log_bench(
    database_url: str, records: int = 50_000, repeats: int = 20, keep: bool = False
) -> LogBenchResult:
    """Store `records` log records for one new run, time the log API, print and return figures."""
    await migrate(database_url)
    execution_id = f"bench-logs-{uuid.uuid4().hex[:12]}"
    try:
        seconds = await _insert(database_url, execution_id, records)
        result = LogBenchResult(
            execution_id=execution_id,
            records=records,
            insert_seconds=round(seconds, 2),
            insert_records_per_second=round(records / seconds),
            first_page_uses_index=await _first_page_uses_index(database_url, execution_id),
            timings=await _time_api(database_url, execution_id, repeats),
        )
    finally:
        if not keep:
            await _delete(database_url, execution_id)
    print_result(result)
    return result


def print_result(result: LogBenchResult) -> None:
    print(f"log benchmark: run {result.execution_id} with {result.records:,} log records")
    print(
        f"  stored through store_batch in {result.insert_seconds:.2f} s "
        f"({result.insert_records_per_second:,} records/s)"
    )
    print(f"  first page query uses idx_log_records_execution_time: {result.first_page_uses_index}")
    print(f"  {'request':<32} {'rows':>5} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    for t in result.timings:
        print(f"  {t.name:<32} {t.rows:>5} {t.median_ms:>10.2f} {t.p95_ms:>8.2f} {t.max_ms:>8.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="leave the benchmark's run in the database")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give --database-url or set DATABASE_URL")
    result = asyncio.run(run_log_bench(args.database_url, args.records, args.repeats, args.keep))
    if args.json:
        print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
