"""Live log streams of a running run hold no database connection between their polls:
more streams than the pool has connections, and every other request still answers;
past the cap a stream is refused with 429."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from sqlalchemy import make_url

from services.artifacts.database import new_engine, new_sessionmaker
from services.artifacts.ingest.store import store_batch
from services.artifacts.main import create_app
from services.artifacts.migrate import migrate
from services.artifacts.settings import ArtifactsSettings
from shared.database import normalize_database_url
from shared.events import LogRecorded, RunRequested, RunStarted
from shared.http import serving

pytestmark = pytest.mark.integration

RUN = {"workflow_id": "ibkr_trading_signal_workflow", "execution_id": "run-still-going"}
POOL = 2
STREAMS = 12


async def running_run(url: str) -> None:
    now = datetime.now(UTC)
    events = [
        RunRequested(**RUN, trigger="manual", occurred_at=now - timedelta(minutes=1)),
        RunStarted(**RUN, steps=["fetch_market_data"], occurred_at=now - timedelta(seconds=50)),
        *[LogRecorded(**RUN, message=f"line {i}", occurred_at=now - timedelta(seconds=40 - i)) for i in range(5)],
    ]
    engine = new_engine(normalize_database_url(url))
    try:
        async with new_sessionmaker(engine)() as session, session.begin():
            await store_batch(session, events)
    finally:
        await engine.dispose()


async def next_record(lines: AsyncIterator[str]) -> str:
    """The next `data:` line. The iterator is kept, not left: leaving it closes the stream."""
    async for line in lines:
        if line.startswith("data:"):
            return line
    raise AssertionError("the stream ended")


async def connections_in_transaction(url: str) -> int:
    parts = make_url(url)
    connection = await asyncpg.connect(host=parts.host, port=parts.port, user=parts.username,
                                       password=parts.password, database=parts.database)
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'",
            parts.database,
        )
    finally:
        await connection.close()


async def test_more_streams_than_connections_and_the_api_still_answers(new_database):
    url = new_database("log_streams")
    await migrate(url)
    await running_run(url)
    settings = ArtifactsSettings(
        database_url=url, artifacts_consumer_enabled=False, artifacts_db_pool_size=POOL, artifacts_db_max_overflow=0,
        artifacts_max_log_streams=STREAMS, artifacts_log_stream_poll_seconds=0.2,
    )
    stream_path = f"/api/runs/{RUN['execution_id']}/logs/stream"
    async with serving(create_app(settings)) as base_url, \
            httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(60)) as client, \
            contextlib.AsyncExitStack() as open_streams:
        streams = [await open_streams.enter_async_context(client.stream("GET", stream_path)) for _ in range(STREAMS)]
        assert [s.status_code for s in streams] == [200] * STREAMS
        lines = [s.aiter_lines() for s in streams]
        firsts = await asyncio.gather(*(next_record(each) for each in lines))
        assert all('"message":"line 0"' in line for line in firsts)

        # Six times more requests than the pool has connections, all at once, while every stream polls.
        answers = await asyncio.gather(*(
            client.get("/api/runs") if i % 2 else client.get(f"/api/runs/{RUN['execution_id']}")
            for i in range(6 * POOL)
        ))
        assert [a.status_code for a in answers] == [200] * (6 * POOL)
        assert answers[1].json()["runs"][0]["execution_id"] == RUN["execution_id"]
        # A poll is in a transaction for a moment; nothing stays in one: some look sees none.
        assert min([await connections_in_transaction(url) for _ in range(20)]) == 0
        # Every stream is still open and still following the run.
        seconds = await asyncio.gather(*(next_record(each) for each in lines))
        assert all('"message":"line 1"' in line for line in seconds)

        refused = await client.get(stream_path)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "5"
        assert "too many live log streams (12)" in refused.json()["error"]

    # Closed streams free their places.
    async with serving(create_app(settings)) as base_url, httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        async with client.stream("GET", stream_path) as again:
            assert again.status_code == 200
            assert '"message":"line 0"' in await next_record(again.aiter_lines())
