"""`make bench`: the figures the issues ask for, printed; nothing is asserted.

- the log API of a run with 50,000 log records (first page, filters, deep pages);
- the first screen of that run's page through the gateway: server HTML, and headless
  Chromium until the first log line shows.

Uses its own embedded PostgreSQL (or `DATABASE_URL`) and throws it away afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ibflow.devstack.postgres import EmbeddedPostgres
from services.artifacts.bench import run_log_bench
from services.artifacts.main import create_app as create_artifacts_app
from services.artifacts.settings import ArtifactsSettings
from services.gateway.bench import time_run_page
from shared.http import serving

LOG_RECORDS = int(os.environ.get("BENCH_LOG_RECORDS", 50_000))


async def bench(database_url: str) -> None:
    print(f"== a run with {LOG_RECORDS:,} log records: the log API ==")
    logs = await run_log_bench(database_url, records=LOG_RECORDS, keep=True)

    print(f"\n== the same run's page (/runs/{logs.execution_id}) through the gateway ==")
    settings = ArtifactsSettings(database_url=database_url, artifacts_consumer_enabled=False, log_level="WARNING")
    app = create_artifacts_app(settings)
    # no broker runs for the benchmark; its health probe need not say so on every load
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    async with serving(app) as artifacts_url:
        await time_run_page(artifacts_url, logs.execution_id)


def main() -> None:
    if url := os.environ.get("DATABASE_URL"):
        asyncio.run(bench(url))
        return
    folder = Path(tempfile.mkdtemp(prefix="ibflow-bench-"))
    postgres = EmbeddedPostgres(folder / "postgres", durable=False)
    postgres.start()
    try:
        asyncio.run(bench(postgres.create_database("ibflow_bench")))
    finally:
        postgres.remove()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
