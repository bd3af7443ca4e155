"""Benchmark: lists stay flat from 10,000 to 1,000,000 artifacts, and log text search on
5,000,000 records stays near the first page (issue 10, items 4 and 7).

Seeds the store with the generator (`services.artifacts.seed`, COPY), serves the API
from a real uvicorn server on a loopback port, and times requests through HTTP:

- every filter of `GET /api/artifacts/` and `GET /api/runs` (and the pairs that have an
  index, and one pair that has none): p50 and p99 at the small size and at the large
  size, and the ratio of the p99s;
- page 1 against page 1,000, reached by following `next_cursor`;
- a run with millions of log records: text searches (`?q=`) against its first page.

Requests go round-robin over the filters and the sizes, so a noisy moment of a shared
machine spreads over all of them instead of spoiling one. It prints the figures and returns them; it
asserts nothing about speed.

    python -m services.artifacts.list_bench --small-database-url URL --database-url URL
        [--small 10000] [--large 1000000] [--log-records 5000000] [--rounds 200]

The small store and the large one are two databases, both empty (migrated or not): the
large one holds the small one's rows and more, and both are served at once, so each
request at 10,000 is timed right next to the same request at 1,000,000. Sizes default
to BENCH_ARTIFACTS_SMALL, BENCH_ARTIFACTS_LARGE and BENCH_LOG_RECORDS_LARGE.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import asyncpg
import httpx

from services.artifacts.main import create_app
from services.artifacts.migrate import migrate
from services.artifacts.seed import WORKFLOWS, asyncpg_dsn, seed_artifacts, seed_log_run
from services.artifacts.settings import ArtifactsSettings
from shared.http import serving

SMALL = int(os.environ.get("BENCH_ARTIFACTS_SMALL", 10_000))
LARGE = int(os.environ.get("BENCH_ARTIFACTS_LARGE", 1_000_000))
LOG_RECORDS = int(os.environ.get("BENCH_LOG_RECORDS_LARGE", 5_000_000))
ROUNDS = int(os.environ.get("BENCH_LIST_ROUNDS", 200))
WARMUP_ROUNDS = 5
DEEP_PAGE = 1_000
FLAT_GOAL = 1.5
SEARCH_GOAL = 2.0


@dataclass
class Sample:
    name: str
    path: str
    ms: list[float] = field(default_factory=list)
    rows: int = 0

    def p(self, q: float) -> float:
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.ms)

    @property
    def p99(self) -> float:
        return self.p(0.99)


@dataclass
class FilterFigures:
    list_name: str
    name: str
    path: str
    indexed: bool
    small: Sample
    large: Sample

    @property
    def ratio(self) -> float:
        return self.large.p99 / self.small.p99

    @property
    def p50_ratio(self) -> float:
        return self.large.p50 / self.small.p50


@dataclass
class ListBenchResult:
    small_artifacts: int
    large_artifacts: int
    small_runs: int
    large_runs: int
    log_records: int
    seed_seconds: dict[str, float]
    filters: list[FilterFigures] = field(default_factory=list)
    deep_pages: list[tuple[Sample, Sample]] = field(default_factory=list)  # (page 1, page 1,000)
    log_first_page: Sample | None = None
    log_searches: list[Sample] = field(default_factory=list)


@dataclass(frozen=True)
class Probe:
    list_name: str
    name: str
    path: str
    indexed: bool = True


def _query(path: str, **params: str | int) -> str:
    return f"{path}?{urlencode(params)}"


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _probes(database_url: str, now: datetime) -> list[Probe]:
    """The requests timed at both sizes; ids are taken from the small store, so they
    name the same rows after it grew."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        execution_id = await conn.fetchval(
            "SELECT execution_id FROM runs WHERE artifact_count > 5 ORDER BY opened_at DESC OFFSET 10 LIMIT 1"
        )
        dag_id = await conn.fetchval(
            "SELECT dag_id FROM artifacts WHERE dag_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        )
        task_id = await conn.fetchval(
            "SELECT task_id FROM artifacts WHERE dag_id = $1 GROUP BY 1 ORDER BY count(*) DESC LIMIT 1", dag_id
        )
    finally:
        await conn.close()
    busy, quiet = WORKFLOWS[0].workflow_id, WORKFLOWS[11].workflow_id
    month_ago, year_ago = _instant(now - timedelta(days=30)), _instant(now - timedelta(days=400))
    a, r = "/api/artifacts/", "/api/runs"
    artifacts = [
        Probe("artifacts", "no filter", _query(a, limit=50)),
        Probe("artifacts", "no filter, limit=500", _query(a, limit=500)),
        Probe("artifacts", "workflow_id (busiest)", _query(a, workflow_id=busy)),
        Probe("artifacts", "workflow_id (quiet)", _query(a, workflow_id=quiet)),
        Probe("artifacts", "execution_id", _query(a, execution_id=execution_id)),
        Probe("artifacts", "step_name", _query(a, step_name="generate_signals")),
        Probe("artifacts", "kind", _query(a, kind="signals")),
        Probe("artifacts", "kind (rare)", _query(a, kind="notebook")),
        Probe("artifacts", "dag_id", _query(a, dag_id=dag_id)),
        Probe("artifacts", "task_id", _query(a, task_id=task_id)),
        Probe("artifacts", "dag_id + task_id", _query(a, dag_id=dag_id, task_id=task_id)),
        Probe("artifacts", "created_after (30 days)", _query(a, created_after=month_ago)),
        Probe("artifacts", "created_after + before (30 days, a year ago)",
              _query(a, created_after=year_ago, created_before=_instant(now - timedelta(days=370)))),
        Probe("artifacts", "workflow_id + step_name", _query(a, workflow_id=busy, step_name="generate_signals")),
        Probe("artifacts", "workflow_id + kind", _query(a, workflow_id=busy, kind="signals")),
        Probe("artifacts", "kind + created_after", _query(a, kind="signals", created_after=month_ago)),
        Probe("artifacts", "step_name + kind (no index of its own)",
              _query(a, step_name="generate_signals", kind="model"), indexed=False),
    ]
    runs = [
        Probe("runs", "no filter", _query(r, limit=50)),
        Probe("runs", "workflow_id", _query(r, workflow_id=busy)),
        Probe("runs", "status=succeeded", _query(r, status="succeeded")),
        Probe("runs", "status=failed", _query(r, status="failed")),
        Probe("runs", "status=running", _query(r, status="running")),
        Probe("runs", "status=abandoned", _query(r, status="abandoned")),
        Probe("runs", "trigger=manual", _query(r, trigger="manual")),
        Probe("runs", "started_after (30 days)", _query(r, started_after=month_ago)),
        Probe("runs", "workflow_id + status (no index of its own)",
              _query(r, workflow_id=busy, status="failed"), indexed=False),
    ]
    return artifacts + runs


async def _get(client: httpx.AsyncClient, path: str) -> tuple[float, dict]:
    started = time.perf_counter()
    response = await client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed, response.json()


async def _round_robin(clients: list[httpx.AsyncClient], samples: list[list[Sample]], rounds: int) -> None:
    """Each round asks each client for each sample once; `samples[c]` are client c's.
    The clients take turns request by request, in an order that alternates by round, so
    what the machine does meanwhile falls on all of them alike."""
    for round_ in range(WARMUP_ROUNDS + rounds):
        order = list(range(len(clients)))[:: 1 if round_ % 2 else -1]
        for i in range(len(samples[0])):
            for c in order:
                sample = samples[c][i]
                elapsed, body = await _get(clients[c], sample.path)
                if round_ >= WARMUP_ROUNDS:
                    sample.ms.append(elapsed)
                sample.rows = len(next(iter(body.values())))


async def _page_path(client: httpx.AsyncClient, path: str, page: int) -> str | None:
    """The path of page `page` of a list, reached by following its cursors."""
    for _ in range(page - 1):
        _, body = await _get(client, path)
        if not body.get("next_cursor"):
            return None
        base = path.split("&cursor=")[0]
        path = f"{base}&{urlencode({'cursor': body['next_cursor']})}"
    return path


def _serve(database_url: str):
    # no broker runs for the benchmark; the health probe need not say so
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    settings = ArtifactsSettings(database_url=database_url, artifacts_consumer_enabled=False, log_level="WARNING")
    return serving(create_app(settings))


@asynccontextmanager
async def _clients(*database_urls: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """An HTTP client of a real server of the API for each database."""
    async with AsyncExitStack() as stack:
        clients = []
        for url in database_urls:
            base_url = await stack.enter_async_context(_serve(url))
            clients.append(await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=60)))
        yield clients


async def _time_lists(small_url: str, large_url: str, probes: list[Probe], rounds: int) -> tuple[list, list]:
    small, large = [Sample(p.name, p.path) for p in probes], [Sample(p.name, p.path) for p in probes]
    async with _clients(small_url, large_url) as clients:
        await _round_robin(clients, [small, large], rounds)
    return small, large


async def _time_deep_pages(database_url: str, probes: list[Probe], rounds: int) -> list[tuple[Sample, Sample]]:
    pairs = []
    walked = {("artifacts", "no filter"), ("artifacts", "dag_id"), ("runs", "no filter")}
    async with _clients(database_url) as (client,):
        for probe in (p for p in probes if (p.list_name, p.name) in walked):
            deep_path = await _page_path(client, probe.path, DEEP_PAGE)
            if deep_path is None:
                continue
            name = f"{probe.list_name}, {probe.name}"
            pair = (Sample(f"{name}: page 1", probe.path), Sample(f"{name}: page {DEEP_PAGE:,}", deep_path))
            await _round_robin([client], [list(pair)], rounds)
            pairs.append(pair)
    return pairs


async def _search_terms(database_url: str, execution_id: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        ticket_line = await conn.fetchval(
            "SELECT message FROM log_records WHERE execution_id = $1 AND message LIKE 'order ticket %' "
            "ORDER BY occurred_at DESC LIMIT 1", execution_id,
        )
    finally:
        await conn.close()
    return [
        ("one line: an order ticket", ticket_line.split()[2]),
        ("an IBKR error code (~0.7 %)", "error 354"),
        ("a symbol (~2.5 %)", "NVDA"),
        ("a word (~7 %)", "heartbeat"),
        ("a phrase of common words (~0.25 %)", "bars for AAPL from cache"),
        ("text no line has", "no such text"),
    ]


async def _time_log_search(database_url: str, execution_id: str, rounds: int) -> tuple[Sample, list[Sample]]:
    logs = f"/api/runs/{execution_id}/logs"
    first = Sample("first page (200 records)", _query(logs, limit=200))
    searches = [
        Sample(f"{name}: {term!r}", _query(logs, limit=200, q=term))
        for name, term in await _search_terms(database_url, execution_id)
    ]
    async with _clients(database_url) as clients:
        await _round_robin(clients, [[first, *searches]], rounds)
    return first, searches


async def _count(database_url: str, table: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await conn.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await conn.close()


async def run_list_bench(
    small_url: str,
    large_url: str,
    small: int = SMALL,
    large: int = LARGE,
    log_records: int = LOG_RECORDS,
    rounds: int = ROUNDS,
) -> ListBenchResult:
    """Seed `small` artifacts into the database of `small_url`, the same ones and more up
    to `large` into that of `large_url` (both empty), time the lists of both side by
    side, then a run with `log_records` log records; print and return the figures."""
    for url in (small_url, large_url):
        await migrate(url)
        if await _count(url, "artifacts"):
            raise RuntimeError("the list benchmark needs databases without artifacts: its sizes are what it seeds")
    now = datetime.now(UTC)
    seconds: dict[str, float] = {}
    print(f"  seeding {small:,} artifacts, and the same {small:,} plus {large - small:,} more ...", flush=True)
    seconds[f"{small:,} artifacts"] = (await seed_artifacts(small_url, small, seed=1, end=now)).seconds
    await seed_artifacts(large_url, small, seed=1, end=now)
    seconds[f"{large - small:,} more"] = (await seed_artifacts(large_url, large - small, seed=2, end=now)).seconds
    probes = await _probes(small_url, now)
    print(f"  timing {len(probes)} lists at {small:,} and {large:,} artifacts, {rounds} rounds ...", flush=True)
    small_samples, large_samples = await _time_lists(small_url, large_url, probes, rounds)
    print(f"  following cursors to page {DEEP_PAGE:,} ...", flush=True)
    deep_pages = await _time_deep_pages(large_url, probes, rounds)

    result = ListBenchResult(
        small_artifacts=await _count(small_url, "artifacts"),
        large_artifacts=await _count(large_url, "artifacts"),
        small_runs=await _count(small_url, "runs"),
        large_runs=await _count(large_url, "runs"),
        log_records=log_records,
        seed_seconds=seconds,
        filters=[
            FilterFigures(p.list_name, p.name, p.path, p.indexed, s, l)
            for p, s, l in zip(probes, small_samples, large_samples, strict=True)
        ],
        deep_pages=deep_pages,
    )
    print_lists(result)
    if log_records:
        print(f"  seeding a run with {log_records:,} log records ...", flush=True)
        execution_id, seeded_seconds = await seed_log_run(large_url, log_records, seed=3)
        seconds[f"{log_records:,} log records"] = seeded_seconds
        print(f"  timing log searches, {rounds} rounds ...", flush=True)
        result.log_first_page, result.log_searches = await _time_log_search(large_url, execution_id, rounds)
        print_log_search(result)
    return result


def print_lists(result: ListBenchResult) -> None:
    seeded = ", ".join(f"{what} in {s:.0f} s" for what, s in result.seed_seconds.items())
    print(f"list benchmark: seeded by COPY ({seeded})")
    print(f"  {result.small_artifacts:,} artifacts ({result.small_runs:,} runs) -> "
          f"{result.large_artifacts:,} artifacts ({result.large_runs:,} runs); ms through HTTP")
    small, large = f"{result.small_artifacts // 1000:,}k", f"{result.large_artifacts // 1000:,}k"
    header = (f"  {'list':<9} {'filter':<46} {'rows':>4} {small + ' p50':>9} {small + ' p99':>9} "
              f"{large + ' p50':>10} {large + ' p99':>10} {'p99 ratio':>9} {'p50 ratio':>9}")
    print(header)
    for f in result.filters:
        mark = "" if f.ratio <= FLAT_GOAL else "  > goal"
        print(f"  {f.list_name:<9} {f.name:<46} {f.large.rows:>4} {f.small.p50:>9.1f} {f.small.p99:>9.1f} "
              f"{f.large.p50:>10.1f} {f.large.p99:>10.1f} {f.ratio:>9.2f} {f.p50_ratio:>9.2f}{mark}")
    for first, deep in result.deep_pages:
        print(f"  {deep.name}: p50 {deep.p50:.1f} ms, p99 {deep.p99:.1f} ms; page 1: p50 {first.p50:.1f} ms, "
              f"p99 {first.p99:.1f} ms (ratio of p50s {deep.p50 / first.p50:.2f})")


def print_log_search(result: ListBenchResult) -> None:
    if result.log_first_page is not None:
        first = result.log_first_page
        seeded = result.seed_seconds.get(f"{result.log_records:,} log records", 0.0)
        print(f"  log search in a run of {result.log_records:,} records (seeded by COPY in {seeded:.0f} s): "
              f"first page p50 {first.p50:.1f} ms, p99 {first.p99:.1f} ms")
        for s in result.log_searches:
            ratio = s.p50 / first.p50
            mark = "" if ratio <= SEARCH_GOAL else "  > goal"
            print(f"    {s.name:<64} {s.rows:>3} rows  p50 {s.p50:7.1f} ms  "
                  f"p99 {s.p99:7.1f} ms  {ratio:5.2f}x first page{mark}")


def table_rows(result: ListBenchResult) -> list[str]:
    """Rows for the README's performance table: | figure | measured | reference |."""
    indexed = [f for f in result.filters if f.indexed]
    worst = max(indexed, key=lambda f: f.ratio)
    size = f"{result.large_artifacts // 1000:,}k ÷ {result.small_artifacts // 1000:,}k artifacts"
    p50_ratios = [f.p50_ratio for f in indexed]
    rows = [
        f"| list p99 {size}, {len(indexed)} indexed filters | {min(f.ratio for f in indexed):.2f}–{worst.ratio:.2f} "
        f"(worst: {worst.list_name} {worst.name}; p50s {min(p50_ratios):.2f}–{max(p50_ratios):.2f}) "
        f"| goal ≤ {FLAT_GOAL} |",
    ]
    for first, deep in result.deep_pages:
        rows.append(f"| {deep.name} by cursor, p50 | {deep.p50:.1f} ms | page 1 {first.p50:.1f} ms |")
    if result.log_first_page is not None:
        first = result.log_first_page.p50
        ratios = [s.p50 / first for s in result.log_searches]
        rows.append(
            f"| log text search, {result.log_records:,} records, p50 | {min(ratios):.2f}–{max(ratios):.2f}× "
            f"the first page ({len(ratios)} searches) | first page {first:.1f} ms; goal ≤ {SEARCH_GOAL}× |"
        )
    return rows


async def list_section(new_database: Callable[[str], Awaitable[str]], readme_rows: list[str]) -> None:
    """The `lists` section of `make bench`, in a database of its own."""
    print(f"== lists from {SMALL:,} to {LARGE:,} artifacts; log search in {LOG_RECORDS:,} records ==")
    small_url, large_url = await new_database("ibflow_bench_lists_small"), await new_database("ibflow_bench_lists")
    result = await run_list_bench(small_url, large_url)
    readme_rows += table_rows(result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="the large store")
    parser.add_argument("--small-database-url", required=True, help="the small store")
    parser.add_argument("--small", type=int, default=SMALL)
    parser.add_argument("--large", type=int, default=LARGE)
    parser.add_argument("--log-records", type=int, default=LOG_RECORDS, help="0: no log search figures")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give --database-url or set DATABASE_URL")
    asyncio.run(run_list_bench(
        args.small_database_url, args.database_url, args.small, args.large, args.log_records, args.rounds
    ))


if __name__ == "__main__":
    main()
