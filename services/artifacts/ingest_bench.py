"""Benchmark: how close the artifacts consumer comes to its ceilings (issue 10, item 2).

Puts N artifact and log events of many executions on a tansu broker of their own, the way
a producer outside ibflow does it (plain aiokafka with a linger, JSON it serialised
itself), then measures in the same run, each clock starting when its consumer has been
given its partitions (a group join takes seconds on tansu and is not ingest):

(a) consume-only: an aiokafka client built with the artifacts consumer's own options
    reads every record, the same way its loop fetches them (the better of two tries);
(b) COPY: the rows those events become (artifacts, log records, runs, steps), copied
    with asyncpg into the same tables of a fresh migrated database (the better of two);
(c) ingest: the artifacts `BatchConsumer` stores them all in a fresh migrated database
    and commits their offsets.

It prints events/s for each and c ÷ min(a, b) per round, then the range over rounds.
Nothing about speed is asserted; what (c) stored is checked against what was produced.

`make bench` (ibflow/bench.py) starts the broker, gives the server the databases are made
on, and calls `run_ingest_bench`; `python -m ibflow.bench ingest` runs this part alone.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import func, select

from services.artifacts.database import new_engine, new_sessionmaker
from services.artifacts.db.models import Artifact, LogRecord, Run, RunStep
from services.artifacts.ingest.consumer import CONSUMED_TOPICS, BatchConsumer, ConsumerStats, NoteAssignment
from services.artifacts.ingest.store import ARTIFACT_COLUMNS, LOG_COLUMNS, artifact_record, log_record
from services.artifacts.migrate import migrate
from services.artifacts.settings import ArtifactsSettings
from shared import topics
from shared.artifact_store import ArtifactStore
from shared.database import normalize_database_url
from shared.events import ArtifactCreated, DeadLetter, LogRecorded, decode_event
from shared.kafka import ensure_topics

NewDatabase = Callable[[str], Awaitable[str]]

EVENTS = int(os.environ.get("BENCH_INGEST_EVENTS", 50_000))
ROUNDS = int(os.environ.get("BENCH_INGEST_ROUNDS", 3))
EVENTS_PER_EXECUTION = 100
REFERENCE_TRIES = 2
ARTIFACT_SHARE = 0.35
WAIT_SECONDS = 600.0

# What an Airflow deployment publishes: DAGs of a few tasks, each task logging and
# leaving datasets, metrics, predictions, reports inline, models and charts by uri.
WORKFLOWS = {
    "daily_prices": ("extract_quotes", "clean_quotes", "load_warehouse"),
    "features_refresh": ("read_bars", "compute_features", "validate_features", "publish_features"),
    "model_training": ("load_features", "split", "train", "evaluate", "register_model"),
    "risk_report": ("positions", "exposures", "var", "render_report"),
    "orders_etl": ("extract_orders", "join_fills", "load_orders"),
    "fx_rates": ("fetch_rates", "validate_rates", "publish_rates"),
    "backtest_weekly": ("load_history", "simulate", "score", "report"),
    "news_sentiment": ("fetch_news", "embed", "score_sentiment", "publish_scores"),
}
SYMBOLS = ("AAPL", "MSFT", "IBM", "GOOG", "AMZN", "TSLA", "NVDA", "META", "JPM", "XOM")
LOG_LEVEL_WEIGHTS = {"DEBUG": 20, "INFO": 70, "WARNING": 7, "ERROR": 3}
ARTIFACT_KINDS = ("dataset", "metrics", "predictions", "report", "model", "chart")
# Where models and charts were put (the consumer refuses a uri outside its store); the
# benchmark only names content there, it writes nothing.
BENCH_STORE = ArtifactStore.from_url((Path(tempfile.gettempdir()) / "ibflow-bench-artifacts").as_uri())


@dataclass
class RoundResult:
    consume_only: float
    copy: float
    ingest: float
    batches: int

    @property
    def ratio(self) -> float:
        return self.ingest / min(self.consume_only, self.copy)


@dataclass
class IngestBenchResult:
    events: int
    executions: int
    artifacts: int
    logs: int
    mean_event_bytes: int
    produce_events_per_second: float
    rounds: list[RoundResult] = field(default_factory=list)

    def span(self, name: str) -> tuple[float, float]:
        values = [getattr(r, name) for r in self.rounds]
        return min(values), max(values)


# --- what an outside producer sends -------------------------------------------------------


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _payload(rng: random.Random, kind: str, task: str) -> dict:
    if kind == "dataset":
        columns = ["date", "symbol", "open", "high", "low", "close", "volume"]
        rows = [
            [f"2025-01-{day:02d}", rng.choice(SYMBOLS), *(round(rng.uniform(50, 500), 2) for _ in range(4)),
             rng.randrange(10_000, 5_000_000)]
            for day in range(1, 13)
        ]
        return {"columns": columns, "rows": rows, "row_count": rng.randrange(1_000, 200_000)}
    if kind == "metrics":
        return {"rmse": rng.random(), "mae": rng.random(), "r2": rng.uniform(-0.2, 0.9),
                "n_train": rng.randrange(500, 50_000), "n_test": rng.randrange(100, 10_000),
                "features": [f"ret_{n}d" for n in (1, 5, 10, 20, 60)] + ["vol_20d", "rsi_14", "macd"]}
    if kind == "predictions":
        return {"symbol": rng.choice(SYMBOLS), "horizon_days": 5,
                "predictions": [{"date": f"2025-02-{d:02d}", "value": round(rng.gauss(0, 0.02), 5),
                                 "lower": round(rng.gauss(-0.03, 0.01), 5), "upper": round(rng.gauss(0.03, 0.01), 5)}
                                for d in range(1, 16)]}
    lines = [f"- {symbol}: exposure {rng.uniform(-1, 1):.3f}, VaR(99%) {rng.uniform(0, 0.05):.4f}"
             for symbol in rng.sample(SYMBOLS, 8)]
    return {"title": f"{task} report", "format": "markdown", "text": "\n".join(["# Summary", *lines] * 3)}


def _artifact(rng: random.Random, ids: dict, task: str, when: datetime) -> dict:
    kind = rng.choice(ARTIFACT_KINDS)
    body = {
        "event_type": "artifact.created", "artifact_id": _uuid(rng), "name": f"{task}_{kind}",
        "kind": kind, "dag_id": ids["workflow_id"], "task_id": task,
        "metadata": {"producer": "airflow", "try_number": 1, "operator": "PythonOperator",
                     "tags": ["daily", kind], "queue": f"worker-{rng.randrange(8)}"},
    }
    if kind in ("model", "chart"):
        digest = hashlib.sha256(rng.randbytes(32)).hexdigest()
        body |= {"media_type": "image/png" if kind == "chart" else "application/octet-stream",
                 "uri": BENCH_STORE.uri_for(digest), "size_bytes": rng.randrange(10_000, 50_000_000),
                 "sha256": digest}
    else:
        body |= {"media_type": "application/json", "payload": _payload(rng, kind, task)}
    return _envelope(rng, ids, task, when) | body


def _log(rng: random.Random, ids: dict, task: str, when: datetime) -> dict:
    level = rng.choices(tuple(LOG_LEVEL_WEIGHTS), weights=tuple(LOG_LEVEL_WEIGHTS.values()))[0]
    rows = rng.randrange(100, 1_000_000)
    message = rng.choice((
        f"Loaded {rows} rows from s3://warehouse/{task}/part-{rng.randrange(100):03d}.parquet",
        f"Task {task} step took {rng.uniform(0.01, 30):.2f}s",
        f"Retrying request to the market data API ({rng.randrange(1, 4)}/3)",
        f"{rng.choice(SYMBOLS)}: {rows} bars after cleaning, {rng.randrange(0, 50)} dropped",
    ))
    return _envelope(rng, ids, task, when) | {
        "event_type": "log.record", "level": level, "message": message, "logger": "airflow.task",
        "fields": {"try_number": 1, "rows": rows, "duration_ms": round(rng.uniform(1, 30_000), 1),
                   "hostname": f"worker-{rng.randrange(8)}", "symbol": rng.choice(SYMBOLS)},
    }


def _envelope(rng: random.Random, ids: dict, task: str, when: datetime) -> dict:
    return {"event_id": _uuid(rng), "schema_version": 1, "occurred_at": when.isoformat(), **ids, "step_name": task}


def outside_events(count: int, seed: int = 10) -> list[tuple[str, bytes, bytes]]:
    """`count` (topic, key, value) records of executions spread over the last 30 days,
    in the order they happened; executions overlap, as concurrent DAG runs do."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    timed: list[tuple[datetime, str, dict]] = []
    executions = max(1, count // EVENTS_PER_EXECUTION)
    for n in range(executions):
        workflow = rng.choice(tuple(WORKFLOWS))
        start = now - timedelta(days=30) + timedelta(seconds=rng.randrange(30 * 86_400 - 7_200))
        ids = {"workflow_id": workflow, "execution_id": f"{workflow}__scheduled__{start.isoformat()}__{n}"}
        share = count // executions + (1 if n < count % executions else 0)
        tasks = WORKFLOWS[workflow]
        for i in range(share):
            task = tasks[i * len(tasks) // share]
            when = start + timedelta(seconds=i * 3, microseconds=rng.randrange(1_000_000))
            make = _artifact if rng.random() < ARTIFACT_SHARE else _log
            timed.append((when, ids["execution_id"], make(rng, ids, task, when)))
    timed.sort(key=lambda item: item[0])
    return [
        (topics.ARTIFACTS if body["event_type"] == "artifact.created" else topics.LOGS, key.encode(),
         json.dumps(body).encode())
        for _, key, body in timed
    ]


async def produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> float:
    """Send every record; returns records/s."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        for chunk in range(0, len(records), 5_000):
            sent = [await producer.send(topic, value, key=key) for topic, key, value in records[chunk:chunk + 5_000]]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return len(records) / (time.perf_counter() - started)


# --- (b) COPY -----------------------------------------------------------------------------


def copy_rows(values: list[bytes]) -> dict[str, tuple[list[str], list[tuple]]]:
    """The rows ingest ends with for these events, {table: (columns, records)}: artifacts
    and log records as the consumer copies them (store.py), runs and steps as they end."""
    events = [decode_event(value) for value in values]
    artifacts, logs = [], []
    runs: dict[str, dict] = {}
    steps: dict[tuple[str, str], dict] = {}
    for event in sorted(events, key=lambda e: e.occurred_at):
        run = runs.setdefault(event.execution_id, {
            "workflow_id": event.workflow_id, "opened_at": event.occurred_at, "artifacts": 0, "logs": 0, "steps": 0})
        run["last_event_at"] = event.occurred_at
        step = steps.get((event.execution_id, event.step_name))
        if step is None:
            step = steps[(event.execution_id, event.step_name)] = {"position": run["steps"], "artifacts": 0}
            run["steps"] += 1
        if isinstance(event, ArtifactCreated):
            run["artifacts"] += 1
            step["artifacts"] += 1
            artifacts.append(artifact_record(event))
        elif isinstance(event, LogRecorded):
            run["logs"] += 1
            logs.append(log_record(event))
    return {
        "runs": (
            ["execution_id", "workflow_id", "status", "opened_at", "last_event_at", "artifact_count", "log_count"],
            [(execution_id, r["workflow_id"], "external", r["opened_at"], r["last_event_at"], r["artifacts"], r["logs"])
             for execution_id, r in sorted(runs.items())],
        ),
        "run_steps": (
            ["execution_id", "step_name", "position", "status", "attempt", "artifact_count"],
            [(execution_id, step_name, s["position"], "running", 0, s["artifacts"])
             for (execution_id, step_name), s in steps.items()],
        ),
        "artifacts": (list(ARTIFACT_COLUMNS), artifacts),
        "log_records": (list(LOG_COLUMNS), logs),
    }


async def time_copy(database_url: str, rows: dict[str, tuple[list[str], list[tuple]]]) -> float:
    """Seconds to COPY `rows` in one transaction."""
    conn = await asyncpg.connect(normalize_database_url(database_url).set(drivername="postgresql")
                                 .render_as_string(hide_password=False))
    try:
        started = time.perf_counter()
        async with conn.transaction():
            for table, (columns, records) in rows.items():
                await conn.copy_records_to_table(table, records=records, columns=columns)
        return time.perf_counter() - started
    finally:
        await conn.close()


# --- (a) consume-only and (c) ingest ------------------------------------------------------


def _settings(bootstrap: str, database_url: str, group_id: str) -> ArtifactsSettings:
    return ArtifactsSettings(
        database_url=database_url, kafka_bootstrap_servers=bootstrap, kafka_enable_idempotence=False,
        kafka_session_timeout_ms=3000, kafka_heartbeat_interval_ms=1000, artifacts_consumer_group_id=group_id,
    )


def batch_consumer(settings: ArtifactsSettings, sessions, publish_dead_letter) -> BatchConsumer:
    """The consumer as the service builds it (services/artifacts/runtime.py)."""
    return BatchConsumer(
        kafka=settings,
        session_factory=sessions,
        publish_dead_letter=publish_dead_letter,
        group_id=settings.artifacts_consumer_group_id,
        max_records=settings.artifacts_batch_max_records,
        batch_timeout_ms=settings.artifacts_batch_timeout_ms,
        max_partition_fetch_bytes=settings.artifacts_max_partition_fetch_bytes,
        fetch_max_bytes=settings.artifacts_fetch_max_bytes,
        db_retry_seconds=settings.artifacts_db_retry_seconds,
        artifact_store=BENCH_STORE,
    )


async def time_consume_only(template: BatchConsumer, group_id: str, expected: int) -> float:
    """Seconds from assignment until a plain client with `template`'s options and fetch
    loop has read `expected` records."""
    clock = ConsumerStats()
    consumer = AIOKafkaConsumer(**template.client_options() | {"group_id": group_id})
    consumer.subscribe(CONSUMED_TOPICS, listener=NoteAssignment(clock))
    await consumer.start()
    try:
        seen = 0
        deadline = time.monotonic() + WAIT_SECONDS
        while seen < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"consume-only read {seen} of {expected} records")
            batch = await consumer.getmany(timeout_ms=template.batch_timeout_ms, max_records=template.max_records)
            seen += sum(len(records) for records in batch.values())
        finished = time.monotonic()
    finally:
        await consumer.stop()
    assert clock.assigned_at is not None
    return finished - clock.assigned_at


async def time_ingest(bootstrap: str, database_url: str, expected: int) -> tuple[float, int]:
    """Seconds from assignment until the artifacts consumer has stored and committed
    `expected` events; and how many batches it took."""
    settings = _settings(bootstrap, database_url, f"bench-ingest-{uuid.uuid4().hex[:8]}")
    engine = new_engine(normalize_database_url(database_url))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()

    async def publish_dead_letter(letter: DeadLetter, key: bytes | None) -> None:
        await producer.send_and_wait(topics.DEADLETTER, letter.to_bytes(), key=key)

    consumer = batch_consumer(settings, new_sessionmaker(engine), publish_dead_letter)
    try:
        await consumer.start()
        stats = consumer.stats
        deadline = time.monotonic() + WAIT_SECONDS
        while stats.events_stored + stats.duplicates + stats.dead_lettered < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"ingest handled {stats.events_stored} of {expected} events; {stats.last_error}")
            await asyncio.sleep(0.005)
        finished = time.monotonic()
        if stats.dead_lettered or stats.duplicates:
            raise RuntimeError(f"{stats.dead_lettered} dead-lettered, {stats.duplicates} duplicates: "
                               f"every benchmark event is new and valid ({stats.last_error})")
    finally:
        await consumer.stop()
        await producer.stop()
        await engine.dispose()
    assert stats.assigned_at is not None
    return finished - stats.assigned_at, stats.batches


def expected_counts(rows: dict[str, tuple[list[str], list[tuple]]]) -> dict[str, int]:
    """What ingest must end with: as many rows as COPY loads, every event counted once."""
    return {table: len(records) for table, (_, records) in rows.items()} | {
        "run artifact_count": len(rows["artifacts"][1]),
        "run log_count": len(rows["log_records"][1]),
        "step artifact_count": len(rows["artifacts"][1]),
    }


async def check_stored(database_url: str, expected: dict[str, int]) -> None:
    """What ingest stored: every artifact, log record, run and step, counted right."""
    engine = new_engine(normalize_database_url(database_url))
    try:
        async with new_sessionmaker(engine)() as session:
            found = {
                "runs": await session.scalar(select(func.count()).select_from(Run)),
                "run_steps": await session.scalar(select(func.count()).select_from(RunStep)),
                "artifacts": await session.scalar(select(func.count()).select_from(Artifact)),
                "log_records": await session.scalar(select(func.count()).select_from(LogRecord)),
                "run artifact_count": await session.scalar(select(func.sum(Run.artifact_count))),
                "run log_count": await session.scalar(select(func.sum(Run.log_count))),
                "step artifact_count": await session.scalar(select(func.sum(RunStep.artifact_count))),
            }
    finally:
        await engine.dispose()
    if found != expected:
        raise RuntimeError(f"ingest stored {found}, expected {expected}")


async def _fresh_migrated(new_database: NewDatabase, name: str) -> str:
    url = await new_database(name)
    await migrate(url)
    return url


async def run_ingest_bench(
    bootstrap: str, new_database: NewDatabase, events: int = EVENTS, rounds: int = ROUNDS
) -> IngestBenchResult:
    """Produce `events` outside events to the broker at `bootstrap` (a fresh one: the
    topics must hold nothing else), measure (b), (a) and (c) `rounds` times, print and
    return the figures."""
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    records = outside_events(events)
    await ensure_topics(_settings(bootstrap, "postgresql://unused", "unused"))
    produce_rate = await produce(bootstrap, records)
    values = [value for _, _, value in records]
    del records
    rows = copy_rows(values)
    result = IngestBenchResult(
        events=len(values),
        executions=len(rows["runs"][1]),
        artifacts=len(rows["artifacts"][1]),
        logs=len(rows["log_records"][1]),
        mean_event_bytes=round(statistics.fmean(len(value) for value in values)),
        produce_events_per_second=produce_rate,
    )
    expected = expected_counts(rows)
    print_header(result)
    template = batch_consumer(_settings(bootstrap, "postgresql://unused", "unused"), None, None)
    for n in range(1, rounds + 1):
        # The references are ceilings: the better of two tries each, so that a burst of
        # load on a shared machine does not flatter the ratio.
        rows = rows or copy_rows(values)
        copy_seconds = min([await time_copy(await _fresh_migrated(new_database, "ibflow_bench_copy"), rows)
                            for _ in range(REFERENCE_TRIES)])
        # The benchmark's own rows would weigh on every garbage collection of the
        # consumers measured next, as nothing of the kind does in the service.
        rows = None
        gc.collect()
        consume_seconds = min([await time_consume_only(template, f"bench-consume-{uuid.uuid4().hex[:8]}",
                                                       result.events) for _ in range(REFERENCE_TRIES)])
        ingest_url = await _fresh_migrated(new_database, "ibflow_bench_ingest")
        ingest_seconds, batches = await time_ingest(bootstrap, ingest_url, result.events)
        await check_stored(ingest_url, expected)
        outcome = RoundResult(
            consume_only=result.events / consume_seconds,
            copy=result.events / copy_seconds,
            ingest=result.events / ingest_seconds,
            batches=batches,
        )
        result.rounds.append(outcome)
        print_round(n, outcome)
    print_summary(result)
    return result


def print_header(result: IngestBenchResult) -> None:
    print(
        f"ingest benchmark: {result.events:,} events ({result.artifacts:,} artifacts, {result.logs:,} log records) "
        f"of {result.executions:,} executions, {result.mean_event_bytes:,} bytes each on average; "
        f"produced at {result.produce_events_per_second:,.0f} events/s"
    )
    print(f"  {'round':<6} {'(a) consume-only':>17} {'(b) COPY':>10} {'(c) ingest':>11} {'c ÷ min(a,b)':>13} "
          f"{'batches':>8}   events/s")


def print_round(n: int, r: RoundResult) -> None:
    print(f"  {n:<6} {r.consume_only:>17,.0f} {r.copy:>10,.0f} {r.ingest:>11,.0f} {r.ratio:>13.2f} {r.batches:>8}")


def _span(low: float, high: float, digits: int = 0) -> str:
    if digits:
        return f"{low:.{digits}f}" if round(low, digits) == round(high, digits) else f"{low:.{digits}f}-{high:.{digits}f}"
    return f"{low:,.0f}" if round(low) == round(high) else f"{low:,.0f}-{high:,.0f}"


def table_rows(result: IngestBenchResult) -> list[str]:
    """Rows for the README's performance table: | figure | measured | reference |."""
    rounds = len(result.rounds)
    return [
        f"| ingest, {result.events:,} outside events (artifacts consumer) | {_span(*result.span('ingest'))} events/s "
        f"| consume-only {_span(*result.span('consume_only'))}/s, COPY {_span(*result.span('copy'))}/s |",
        f"| ingest ÷ min(consume-only, COPY), {rounds} rounds | {_span(*result.span('ratio'), digits=2)} | goal ≥ 0.7 |",
    ]


def print_summary(result: IngestBenchResult) -> None:
    print("  README rows:")
    for row in table_rows(result):
        print(f"  {row}")
