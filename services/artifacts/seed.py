"""Seed generator: a store of artifacts, runs and log records shaped like a busy one,
loaded with COPY.

The shape, from a seeded random generator (the same flags give the same rows):

- 20 workflows, a few much busier than the rest (Zipf-like weights); eight of them are
  Airflow DAGs whose artifacts carry `dag_id` / `task_id` and whose runs are `external`;
- about 10 artifacts per execution (3 to 25), so 1M artifacts are about 100,000 runs,
  spread over the last two years, mostly on weekdays in market hours;
- each workflow has its own steps, each step its own kinds of artifact (charts and
  metrics often, models and reports rarely), 12 step names and 9 kinds in all;
- runs mostly succeeded, some partial or failed (a failed step, the later ones skipped),
  the last hour's still running, a few running ones gone quiet long ago (abandoned);
- log records of one run, from message templates with symbols, numbers and ids, so a
  text search finds anything from one line to most of them.

Rows go in with asyncpg's `copy_records_to_table` in chunks; each call adds to what is
there (new ids every time), so a benchmark can seed 10,000 and then grow to 1,000,000.
Tables are analyzed and vacuumed afterwards, as autovacuum would in a store that grew
over two years (index-only scans need the visibility map).

    python -m services.artifacts.seed --database-url URL --artifacts 100000 [--log-records 500000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from services.artifacts.migrate import migrate
from shared.database import normalize_database_url

CHUNK = 50_000
SPAN = timedelta(days=730)

# step name -> the kinds of artifact it makes, with weights
STEP_KINDS: dict[str, tuple[tuple[str, int], ...]] = {
    "fetch_market_data": (("dataset", 3), ("chart", 1)),
    "compute_features": (("features", 3), ("chart", 2), ("metrics", 1)),
    "generate_signals": (("model", 1), ("metrics", 3), ("signals", 2), ("chart", 2)),
    "publish_signals": (("report", 1), ("signals", 1), ("chart", 2)),
    "extract": (("dataset", 4), ("table", 1)),
    "transform": (("features", 2), ("table", 2), ("metrics", 1)),
    "train": (("model", 2), ("metrics", 3), ("chart", 2)),
    "evaluate": (("metrics", 3), ("chart", 3), ("report", 1)),
    "backtest": (("metrics", 2), ("chart", 3), ("notebook", 1)),
    "score": (("signals", 3), ("metrics", 1)),
    "export": (("report", 2), ("dataset", 1)),
    "notify": (("report", 1),),
}
IBFLOW_STEPS = ("fetch_market_data", "compute_features", "generate_signals", "publish_signals")
DAG_STEPS = (
    ("extract", "transform", "train", "evaluate"),
    ("extract", "transform", "score", "export", "notify"),
    ("extract", "backtest", "evaluate", "export"),
)
WORKFLOW_NAMES = (
    "ibkr_trading_signal_workflow", "momentum_daily", "mean_reversion_intraday", "fx_carry_signals",
    "earnings_nowcast", "vol_surface_fit", "sector_rotation", "pairs_trading", "options_skew_monitor",
    "macro_regime", "etf_flows", "crypto_basis",
    # Airflow DAGs that publish their artifacts from outside
    "airflow_risk_model", "airflow_factor_returns", "airflow_alpha_research", "airflow_credit_spreads",
    "airflow_liquidity_scores", "airflow_news_sentiment", "airflow_esg_scores", "airflow_backtest_nightly",
)
MEDIA_TYPES = {
    "dataset": "application/vnd.apache.parquet", "features": "application/vnd.apache.parquet",
    "model": "application/octet-stream", "chart": "image/png", "report": "text/markdown",
    "notebook": "application/x-ipynb+json", "table": "text/csv",
}
SYMBOLS = (
    "AAPL", "MSFT", "IBM", "GOOG", "AMZN", "NVDA", "META", "TSLA", "JPM", "XOM", "BRK.B", "V", "UNH", "JNJ",
    "WMT", "PG", "MA", "HD", "CVX", "KO", "PEP", "ABBV", "MRK", "AVGO", "COST", "ORCL", "CSCO", "ADBE",
    "CRM", "NFLX", "AMD", "INTC", "QCOM", "TXN", "BA", "CAT", "GS", "MS", "C", "WFC",
)


@dataclass(frozen=True)
class Workflow:
    workflow_id: str
    steps: tuple[str, ...]
    is_dag: bool
    weight: float


WORKFLOWS = tuple(
    Workflow(
        workflow_id=name,
        steps=DAG_STEPS[i % len(DAG_STEPS)] if name.startswith("airflow_") else IBFLOW_STEPS,
        is_dag=name.startswith("airflow_"),
        # a few busy workflows, a long tail of quiet ones
        weight=1 / (i + 1) ** 0.8,
    )
    for i, name in enumerate(WORKFLOW_NAMES)
)


@dataclass(frozen=True)
class SeedResult:
    artifacts: int
    runs: int
    seconds: float


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _run_start(rng: random.Random, end: datetime) -> datetime:
    """Mostly weekdays in US market hours, over the two years before `end`."""
    while True:
        day = end - timedelta(days=rng.random() * SPAN.days)
        if day.weekday() < 5 or rng.random() < 0.15:
            break
    hour = rng.choice((13, 14, 14, 15, 16, 17, 18, 19, 20, 21)) if rng.random() < 0.85 else rng.randrange(24)
    start = day.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60), microsecond=rng.randrange(10**6))
    return min(start, end - timedelta(seconds=rng.randrange(1, 600)))


def _run_outcome(rng: random.Random, workflow: Workflow, start: datetime, end: datetime) -> str:
    if workflow.is_dag:
        return "external"
    age = end - start
    if age < timedelta(hours=1):
        return "running"
    if rng.random() < 0.0005:
        return "running"  # went quiet long ago: shown as abandoned
    roll = rng.random()
    return "failed" if roll < 0.05 else "partial" if roll < 0.10 else "succeeded"


@dataclass
class _Batch:
    artifacts: list[tuple]
    runs: list[tuple]
    steps: list[tuple]


ARTIFACT_COLUMNS = (
    "artifact_id", "event_id", "name", "kind", "media_type", "workflow_id", "execution_id", "step_name",
    "dag_id", "task_id", "created_at", "stored_at", "metadata", "payload", "uri", "size_bytes", "sha256",
)
RUN_COLUMNS = (
    "execution_id", "workflow_id", "status", "trigger", "params", "planned_steps", "opened_at", "requested_at",
    "started_at", "finished_at", "error", "failed_items", "last_event_at", "artifact_count", "log_count",
)
STEP_COLUMNS = (
    "execution_id", "step_name", "position", "status", "attempt", "started_at", "finished_at", "error",
    "skipped_reason", "artifact_count",
)


# choices() with cumulative weights made once: the generator is the seed's hot loop
_KIND_CHOICES = {
    step: ([kind for kind, _ in kinds], list(itertools.accumulate(weight for _, weight in kinds)))
    for step, kinds in STEP_KINDS.items()
}
_WORKFLOW_CUM_WEIGHTS = list(itertools.accumulate(w.weight for w in WORKFLOWS))
_METADATA = {symbol: json.dumps({"symbol": symbol}) for symbol in SYMBOLS}


def _artifact(rng: random.Random, workflow: Workflow, execution_id: str, step: str, at: datetime) -> tuple:
    kinds, cum_weights = _KIND_CHOICES[step]
    kind = rng.choices(kinds, cum_weights=cum_weights)[0]
    symbol = rng.choice(SYMBOLS)
    artifact_id = _uuid(rng)
    if kind in MEDIA_TYPES:
        size = rng.randrange(2_000, 5_000_000)
        sha = hashlib.sha256(artifact_id.bytes).hexdigest()
        stored = (MEDIA_TYPES[kind], None, f"file:///var/artifact-store/{execution_id}/{artifact_id}", size, sha)
    else:
        payload = {"symbol": symbol, "value": round(rng.random(), 4)}
        if kind == "signals":
            payload = {"signals": [{"symbol": symbol, "action": rng.choice(("BUY", "SELL", "HOLD")),
                                    "strength": round(rng.random(), 3)}]}
        stored = ("application/json", json.dumps(payload), None, None, None)
    media_type, payload_json, uri, size, sha = stored
    return (
        artifact_id, _uuid(rng), f"{kind} {symbol}", kind, media_type, workflow.workflow_id, execution_id, step,
        workflow.workflow_id if workflow.is_dag else None, step if workflow.is_dag else None,
        at, at + timedelta(milliseconds=rng.randrange(5, 900)), _METADATA[symbol],
        payload_json, uri, size, sha,
    )


def _execution(rng: random.Random, workflow: Workflow, end: datetime, artifacts: int, batch: _Batch) -> None:
    start = _run_start(rng, end)
    execution_id = f"{workflow.workflow_id}__{start:%Y-%m-%dT%H:%M:%S}_{rng.getrandbits(32):08x}"
    status = _run_outcome(rng, workflow, start, end)
    steps = workflow.steps
    failed_at = rng.randrange(len(steps)) if status == "failed" else None
    step_span = timedelta(seconds=rng.uniform(2, 120))
    # artifacts in step order over the run, each at its own microsecond
    at = sorted(start + step_span * rng.uniform(0, len(steps)) for _ in range(artifacts))
    per_step = dict.fromkeys(steps, 0)
    for created_at in at:
        position = min(int((created_at - start) / step_span), len(steps) - 1)
        if failed_at is not None:
            position = min(position, failed_at)
        step = steps[position]
        per_step[step] += 1
        batch.artifacts.append(_artifact(rng, workflow, execution_id, step, created_at))
    finished = None if status in ("running", "queued") else start + step_span * len(steps)
    last_event = max([start, *at, *([finished] if finished else [])])
    symbols = rng.sample(SYMBOLS, rng.randrange(1, 6))
    failed_items = (
        [{"item": symbols[0], "step": steps[0], "reason": "no security definition (code 200)", "code": 200}]
        if status == "partial" else []
    )
    ibflow_run = not workflow.is_dag
    batch.runs.append((
        execution_id, workflow.workflow_id, status,
        (rng.choice(("schedule",) * 6 + ("manual",)) if ibflow_run else None),
        json.dumps({"symbols": symbols} if ibflow_run else {}), json.dumps(list(steps) if ibflow_run else []),
        start, start if ibflow_run else None, start if ibflow_run else None,
        finished, f"{steps[failed_at]} failed: model diverged" if failed_at is not None else None,
        json.dumps(failed_items), last_event, artifacts, 0,
    ))
    for position, step in enumerate(steps):
        step_status = "external" if workflow.is_dag else "succeeded"
        if failed_at is not None and position >= failed_at:
            step_status = "failed" if position == failed_at else "skipped"
        if status == "running" and position == len(steps) - 1:
            step_status = "running"
        ran = step_status in ("succeeded", "failed", "running")
        batch.steps.append((
            execution_id, step, position, step_status, 1 if ran else 0,
            start + step_span * position if ran else None,
            start + step_span * (position + 1) if step_status in ("succeeded", "failed") else None,
            "model diverged" if step_status == "failed" else None,
            f"step {steps[failed_at]} failed" if step_status == "skipped" else None,
            per_step[step],
        ))


def _batches(rng: random.Random, artifacts: int, end: datetime) -> Iterator[_Batch]:
    batch = _Batch([], [], [])
    left = artifacts
    while left > 0:
        count = min(left, max(3, min(25, round(rng.gauss(10, 4)))))
        _execution(rng, rng.choices(WORKFLOWS, cum_weights=_WORKFLOW_CUM_WEIGHTS)[0], end, count, batch)
        left -= count
        if len(batch.artifacts) >= CHUNK:
            yield batch
            batch = _Batch([], [], [])
    if batch.artifacts:
        yield batch


def asyncpg_dsn(database_url: str) -> str:
    return normalize_database_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _vacuum_analyze(conn: asyncpg.Connection, *tables: str) -> None:
    for table in tables:
        await conn.execute(f"VACUUM (ANALYZE) {table}")


async def seed_artifacts(
    database_url: str, artifacts: int, seed: int | None = None, end: datetime | None = None
) -> SeedResult:
    """Add `artifacts` artifacts, with their runs and steps, to the store. The same seed
    twice makes the same ids twice: seed one store with different seeds."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC)
    started = time.perf_counter()
    runs = 0
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        for batch in _batches(rng, artifacts, end):
            async with conn.transaction():
                await conn.copy_records_to_table("runs", records=batch.runs, columns=RUN_COLUMNS)
                await conn.copy_records_to_table("run_steps", records=batch.steps, columns=STEP_COLUMNS)
                await conn.copy_records_to_table("artifacts", records=batch.artifacts, columns=ARTIFACT_COLUMNS)
            runs += len(batch.runs)
        await _vacuum_analyze(conn, "runs", "run_steps", "artifacts")
    finally:
        await conn.close()
    return SeedResult(artifacts=artifacts, runs=runs, seconds=time.perf_counter() - started)


LOG_COLUMNS = (
    "event_id", "workflow_id", "execution_id", "step_name", "occurred_at", "level", "level_no", "message",
    "logger", "fields",
)
LEVELS = (("DEBUG", 10, 30), ("INFO", 20, 60), ("WARNING", 30, 8), ("ERROR", 40, 2))
SOURCES = ("IBKR", "sample_file", "cache")
IBKR_ERRORS = ((162, "historical market data service error"), (200, "no security definition"),
               (354, "requested market data is not subscribed"), (2104, "market data farm connection is OK"))


def _message(rng: random.Random, i: int) -> tuple[str, str]:
    """A step name and a log line; `order ticket` ids are unique, so one of them is a one-line search."""
    symbol = rng.choice(SYMBOLS)
    roll = rng.random()
    if roll < 0.30:
        bars, source = rng.randrange(20, 260), rng.choice(SOURCES)
        return "fetch_market_data", f"fetched {bars} daily bars for {symbol} from {source}"
    if roll < 0.50:
        features, ms = rng.randrange(8, 64), rng.randrange(1, 900)
        return "compute_features", f"computed {features} features for {symbol} in {ms} ms"
    if roll < 0.65:
        auc, samples = rng.uniform(0.45, 0.8), rng.randrange(200, 2000)
        return "generate_signals", f"model for {symbol}: auc {auc:.3f} on {samples} samples"
    if roll < 0.80:
        action = rng.choice(("BUY", "SELL", "HOLD"))
        return "generate_signals", f"signal {action} {symbol} strength {rng.random():.2f} at {rng.uniform(5, 900):.2f}"
    if roll < 0.90:
        return "publish_signals", f"order ticket T{i:09d} queued for {symbol}"
    if roll < 0.93:
        code, text = rng.choice(IBKR_ERRORS)
        return "fetch_market_data", f"retrying request {rng.randrange(10**6)} after IBKR error {code}: {text}"
    return "publish_signals", f"heartbeat ok, {rng.randrange(1000)} messages in queue"


def _log_rows(rng: random.Random, execution_id: str, workflow_id: str, start: datetime, records: int,
              first: int) -> Iterator[list[tuple]]:
    levels, weights = [(name, no) for name, no, _ in LEVELS], [w for *_, w in LEVELS]
    rows: list[tuple] = []
    for i in range(first, first + records):
        step, message = _message(rng, i)
        level, level_no = rng.choices(levels, weights)[0]
        rows.append((
            _uuid(rng), workflow_id, execution_id, step, start + timedelta(milliseconds=i * 7 + rng.randrange(5)),
            level, level_no, message, f"ibflow.signals.{step}", json.dumps({"i": i}),
        ))
        if len(rows) == CHUNK:
            yield rows
            rows = []
    if rows:
        yield rows


async def seed_log_run(
    database_url: str, records: int, seed: int | None = None, execution_id: str | None = None
) -> tuple[str, float]:
    """One run with `records` log records, oldest first: its execution id and the seconds it took."""
    rng = random.Random(seed)
    execution_id = execution_id or f"seed-logs-{_uuid(rng).hex[:12]}"
    workflow_id = WORKFLOWS[0].workflow_id
    start = datetime.now(UTC) - timedelta(milliseconds=records * 7 + 60_000)
    started = time.perf_counter()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(
            "INSERT INTO runs (execution_id, workflow_id, status, trigger, opened_at, requested_at, started_at,"
            " finished_at, last_event_at, log_count) VALUES ($1, $2, 'succeeded', 'manual', $3, $3, $3, $4, $4, $5)",
            execution_id, workflow_id, start, start + timedelta(milliseconds=records * 7 + 10), records,
        )
        for rows in _log_rows(rng, execution_id, workflow_id, start, records, 0):
            await conn.copy_records_to_table("log_records", records=rows, columns=LOG_COLUMNS)
        await _vacuum_analyze(conn, "runs", "log_records")
    finally:
        await conn.close()
    return execution_id, time.perf_counter() - started


async def _main(args: argparse.Namespace) -> None:
    await migrate(args.database_url)
    if args.artifacts:
        result = await seed_artifacts(args.database_url, args.artifacts, args.seed)
        print(f"seeded {result.artifacts:,} artifacts of {result.runs:,} runs in {result.seconds:.1f} s")
    if args.log_records:
        execution_id, seconds = await seed_log_run(args.database_url, args.log_records, args.seed)
        print(f"seeded {args.log_records:,} log records of run {execution_id} in {seconds:.1f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--artifacts", type=int, default=1_000_000, help="artifacts to add (0: none)")
    parser.add_argument("--log-records", type=int, default=0, help="log records of one new run (0: none)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed, to make the same rows again (into an empty store); random by default")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give --database-url or set DATABASE_URL")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
