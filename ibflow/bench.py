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

import uvicorn

from ibflow.devstack.postgres import EmbeddedPostgres
from services.artifacts.bench import run_log_bench
from services.artifacts.main import create_app as create_artifacts_app
from services.artifacts.settings import ArtifactsSettings
from services.gateway.bench import time_run_page

LOG_RECORDS = int(os.environ.get("BENCH_LOG_RECORDS", 50_000))


async def bench(database_url: str) -> None:
    print(f"== a run with {LOG_RECORDS:,} log records: the log API ==")
    logs = await run_log_bench(database_url, records=LOG_RECORDS, keep=True)

    print(f"\n== the same run's page (/runs/{logs.execution_id}) through the gateway ==")
    settings = ArtifactsSettings(database_url=database_url, artifacts_consumer_enabled=False, log_level="WARNING")
    app = create_artifacts_app(settings)
    # no broker runs for the benchmark; its health probe need not say so on every load
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        await time_run_page(f"http://127.0.0.1:{port}", logs.execution_id)
    finally:
        server.should_exit = True
        await serving


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
