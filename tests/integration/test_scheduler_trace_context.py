"""The trace context of a run request is fixed at claim time, like its event bytes: a
re-publish after a failed or lost publish carries the same `traceparent`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from services.scheduler.manual_runs import request_manual_run
from services.scheduler.migrate import migrate
from services.scheduler.outbox import RunRequestOutbox
from services.scheduler.schedules import seed_default_schedule
from shared import tracing
from shared.database import normalize_database_url

pytestmark = pytest.mark.integration

WORKFLOW = "ibkr_trading_signal_workflow"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 12, 1, 15, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


class FlakyPublisher:
    """Refuses the first publish, takes the next ones; records what it took."""

    def __init__(self) -> None:
        self.refusals_left = 1
        self.published: list[tuple[bytes, str | None]] = []

    async def publish(self, key: bytes, value: bytes, *, traceparent: str | None = None) -> None:
        if self.refusals_left:
            self.refusals_left -= 1
            raise ConnectionError("broker unreachable")
        self.published.append((key, traceparent))


@pytest.fixture
async def sessions(new_database):
    url = new_database("scheduler_trace")
    await migrate(url)
    engine = create_async_engine(normalize_database_url(url))
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def test_a_republished_request_carries_the_trace_context_of_its_trigger(sessions):
    tracing.configure_tracing("test")
    clock, publisher = Clock(), FlakyPublisher()
    outbox = RunRequestOutbox(sessions, publisher, clock, instance_id="a", lease=timedelta(seconds=30))
    await seed_default_schedule(sessions, cron="0 9 * * *", timezone="UTC", symbols=["AAPL"], now=clock.now())

    # the HTTP request of a manual trigger, as the scheduler's middleware starts it
    with tracing.span("POST /api/workflows/{workflow_id}/runs",
                      parent=tracing.context_from_headers({"traceparent": TRACEPARENT})):
        execution_id = await request_manual_run(sessions, outbox, clock, workflow_id=WORKFLOW, params=None)
    assert publisher.published == []  # the first publish was refused

    clock.at += timedelta(minutes=5)  # past the retry backoff
    assert await outbox.republish_expired() == 1
    ((key, traceparent),) = publisher.published
    assert key == execution_id.encode()
    assert tracing.trace_id_of(traceparent) == TRACE_ID
    assert traceparent != TRACEPARENT  # a child of the trigger's span: the scheduler's own
