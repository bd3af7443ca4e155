"""A partial run is an end for max_active_runs, like a succeeded or failed one."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from services.scheduler import run_tracking
from services.scheduler.migrate import migrate
from shared.database import normalize_database_url
from shared.events import FailedItem, RunPartiallySucceeded, RunStarted, StepSkipped

pytestmark = pytest.mark.integration

NOW = datetime(2027, 1, 4, 14, 0, tzinfo=UTC)
TIMEOUT = timedelta(hours=6)
IDS = {"workflow_id": "wf_partial", "execution_id": "scheduled-wf_partial-20270104T140000Z"}


@pytest.fixture
async def sessions(new_database):
    url = new_database("scheduler_outcomes")
    await migrate(url)
    engine = create_async_engine(normalize_database_url(url))
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def active(sessions) -> int:
    async with sessions() as session:
        return await run_tracking.count_active_runs(session, IDS["workflow_id"], now=NOW, timeout=TIMEOUT)


async def test_a_partial_run_no_longer_counts_as_active_and_a_late_start_does_not_revive_it(sessions):
    async with sessions.begin() as session:
        await run_tracking.mark_requested(session, **IDS, now=NOW)
        assert await run_tracking.apply_run_event(session, RunStarted(**IDS), now=NOW)
        # A step event says nothing about whether the run is still going.
        assert not await run_tracking.apply_run_event(session, StepSkipped(**IDS, step_name="s", reason="r"), now=NOW)
    assert await active(sessions) == 1

    partial = RunPartiallySucceeded(**IDS, failed_items=[FailedItem(item="TSLA", step="fetch", reason="code 200")])
    async with sessions.begin() as session:
        assert await run_tracking.apply_run_event(session, partial, now=NOW)
    assert await active(sessions) == 0

    async with sessions.begin() as session:
        await run_tracking.apply_run_event(session, RunStarted(**IDS), now=NOW)
    assert await active(sessions) == 0
