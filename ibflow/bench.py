"""`make bench`: the figures the issues ask for, printed; nothing is asserted.

Each section measures one thing next to its reference, measured in the same run:

- `logs`: the log API of a run with 50,000 log records (first page, filters, deep pages),
  and the first screen of that run's page through the gateway (server HTML, and
  headless Chromium until the first log line shows);
- `ingest`: events/s through the artifacts consumer against the broker's consume-only
  rate and PostgreSQL's COPY rate of the same events (services/artifacts/ingest_bench.py).

A section is an async function of `Bench`, listed in `SECTIONS`; the rows it adds to
`Bench.readme_rows` are printed at the end for the README's performance table.

    python -m ibflow.bench [SECTION ...]      (all of them by default)

Uses its own embedded PostgreSQL (or the server of `DATABASE_URL`, on which it creates
and drops databases of its own) and its own tansu broker, and throws them away afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from ibflow.bench_run import run_section
from ibflow.devstack.broker import TansuBroker
from ibflow.devstack.postgres import EmbeddedPostgres
from services.artifacts.bench import run_log_bench
from services.artifacts.ingest_bench import run_ingest_bench
from services.artifacts.ingest_bench import table_rows as ingest_table_rows
from services.artifacts.list_bench import list_section
from services.artifacts.main import create_app as create_artifacts_app
from services.artifacts.settings import ArtifactsSettings
from services.gateway.bench import time_run_page
from shared.database import normalize_database_url
from shared.http import serving

LOG_RECORDS = int(os.environ.get("BENCH_LOG_RECORDS", 50_000))


@dataclass
class Bench:
    new_database: Callable[[str], Awaitable[str]]  # an empty database on the bench's server, by name prefix
    workdir: Path
    readme_rows: list[str] = field(default_factory=list)


async def logs_section(bench: Bench) -> None:
    database_url = await bench.new_database("ibflow_bench_logs")
    print(f"== a run with {LOG_RECORDS:,} log records: the log API ==")
    logs = await run_log_bench(database_url, records=LOG_RECORDS, keep=True)

    print(f"\n== the same run's page (/runs/{logs.execution_id}) through the gateway ==")
    settings = ArtifactsSettings(database_url=database_url, artifacts_consumer_enabled=False, log_level="WARNING")
    app = create_artifacts_app(settings)
    # no broker runs for this section; the health probe need not say so on every load
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    async with serving(app) as artifacts_url:
        await time_run_page(artifacts_url, logs.execution_id)


async def ingest_section(bench: Bench) -> None:
    print("== ingest: the artifacts consumer against consume-only and COPY ==")
    with TansuBroker(log_file=bench.workdir / "tansu.log") as broker:
        result = await run_ingest_bench(broker.bootstrap_servers, bench.new_database)
    bench.readme_rows += ingest_table_rows(result)


SECTIONS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "logs": logs_section,
    "ingest": ingest_section,
    "lists": lambda bench: list_section(bench.new_database, bench.readme_rows),
    "runs": run_section,
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{n:.1f}" for n in os.getloadavg())
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, load average {load}"


def databases_on(server_url: str) -> tuple[Callable[[str], Awaitable[str]], Callable[[], Awaitable[None]]]:
    """Fresh databases on the server of `server_url`, and a way to drop every one made."""
    base = normalize_database_url(server_url).set(drivername="postgresql")
    admin_url = base.render_as_string(hide_password=False)
    made: list[str] = []

    async def new_database(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        made.append(name)
        return base.set(database=name).render_as_string(hide_password=False)

    async def drop_all() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            for name in made:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    return new_database, drop_all


async def bench(server_url: str, workdir: Path, sections: list[str]) -> None:
    new_database, drop_all = databases_on(server_url)
    state = Bench(new_database=new_database, workdir=workdir)
    print(f"machine: {machine()}\n")
    try:
        for name in sections:
            await SECTIONS[name](state)
            print()
    finally:
        await drop_all()
    if state.readme_rows:
        print(f"README performance rows (machine: {machine()}):")
        print("| figure | measured | reference, same run |\n|---|---|---|")
        print("\n".join(state.readme_rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"what to measure: {', '.join(SECTIONS)} (default: all)")
    sections = parser.parse_args(argv).sections or list(SECTIONS)
    if unknown := sorted(set(sections) - set(SECTIONS)):
        parser.error(f"no section {', '.join(unknown)}; there are {', '.join(SECTIONS)}")
    workdir = Path(tempfile.mkdtemp(prefix="ibflow-bench-"))
    try:
        if url := os.environ.get("DATABASE_URL"):
            asyncio.run(bench(url, workdir, sections))
            return
        postgres = EmbeddedPostgres(workdir / "postgres", durable=False)
        postgres.start()
        try:
            asyncio.run(bench(postgres.url(), workdir, sections))
        finally:
            postgres.remove()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
