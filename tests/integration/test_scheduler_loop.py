"""The scheduling loop on a real PostgreSQL and a real broker, driven by a fake clock.

Each test has its own database and its own workflow id, so the execution ids it
publishes on the shared broker are its own.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from services.scheduler import run_tracking
from services.scheduler.migrate import migrate
from services.scheduler.outbox import RunRequestOutbox
from services.scheduler.publisher import KafkaRunPublisher
from services.scheduler.rows import LedgerEntry, Schedule, ScheduleSlot, TrackedRun
from services.scheduler.scheduling_loop import SchedulingLoop
from shared import topics
from shared.database import normalize_database_url
from shared.events import RunSucceeded
from shared.kafka import ensure_topics, new_broker
from shared.settings import KafkaSettings
from tests.support import json_value

pytestmark = pytest.mark.integration

LEASE = timedelta(seconds=30)
GRACE = timedelta(seconds=60)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        self._now = now

    def advance(self, **delta) -> None:
        self._now += timedelta(**delta)


class RecordingPublisher:
    """The real Kafka publisher, recording what it published; can be told to fail or hang."""

    def __init__(self, inner: KafkaRunPublisher) -> None:
        self._inner = inner
        self.published: list[dict] = []
        self.failures_left = 0
        self.hang = False
        self.entered = asyncio.Event()

    async def publish(self, key: bytes, value: bytes, *, traceparent: str | None = None) -> None:
        self.entered.set()
        if self.hang:
            await asyncio.Event().wait()  # the process is killed while it waits here
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("broker unreachable")
        await self._inner.publish(key, value, traceparent=traceparent)
        self.published.append(json.loads(value))

    @property
    def execution_ids(self) -> list[str]:
        return [event["execution_id"] for event in self.published]


class Replica:
    """One scheduler replica's loop on its own engine."""

    def __init__(self, url: str, publisher, clock: FakeClock, name: str, **options) -> None:
        self.engine = create_async_engine(normalize_database_url(url))
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.publisher = publisher
        self.outbox = RunRequestOutbox(self.sessions, publisher, clock, instance_id=name, lease=LEASE)
        self.loop = SchedulingLoop(
            self.sessions, self.outbox, clock, instance_id=name, tick_seconds=0.01,
            misfire_grace=options.get("grace", GRACE),
            active_run_timeout=options.get("active_run_timeout", timedelta(hours=6)),
            max_lookback=options.get("max_lookback", timedelta(days=7)),
        )

    async def tick(self) -> None:
        await self.loop.tick()

    async def close(self) -> None:
        await self.engine.dispose()


@pytest.fixture(scope="module")
async def kafka_publisher(kafka_env):
    settings = KafkaSettings(**{key.lower(): value for key, value in kafka_env.items()})
    await ensure_topics(settings)
    broker = new_broker(settings, client_id="test-scheduler-loop")
    await broker.start()
    yield KafkaRunPublisher(broker)
    await broker.stop()


@pytest.fixture
async def database_url(new_database) -> str:
    url = new_database("scheduler_loop")
    await migrate(url)
    return url


@pytest.fixture
def workflow_id() -> str:
    return f"wf_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def replicas(database_url, kafka_publisher):
    made: list[Replica] = []

    def make(clock: FakeClock, name: str = "replica-a", publisher=None, **options) -> Replica:
        replica = Replica(database_url, publisher or RecordingPublisher(kafka_publisher), clock, name, **options)
        made.append(replica)
        return replica

    yield make
    for replica in made:
        await replica.close()


async def add_schedule(replica: Replica, workflow_id: str, *, evaluated_until: datetime, **fields) -> None:
    values = {
        "cron": "0 * * * *", "timezone": "UTC", "paused": False, "misfire_policy": "all",
        "misfire_window_seconds": 3 * 3600, "max_active_runs": None, "calendar": None,
        "default_params": {"symbols": ["AAPL", "MSFT"]},
    } | fields
    async with replica.sessions.begin() as session:
        session.add(Schedule(workflow_id=workflow_id, evaluated_until=evaluated_until, created_at=evaluated_until,
                             updated_at=evaluated_until, **values))


async def edit_schedule(replica: Replica, workflow_id: str, **fields) -> None:
    async with replica.sessions.begin() as session:
        row = await session.get(Schedule, workflow_id)
        for name, value in fields.items():
            setattr(row, name, value)


async def ledger_of(replica: Replica, workflow_id: str) -> list[LedgerEntry]:
    async with replica.sessions() as session:
        return list(await session.scalars(
            select(LedgerEntry).where(LedgerEntry.workflow_id == workflow_id).order_by(LedgerEntry.id)
        ))


def summary(entries: list[LedgerEntry]) -> list[tuple[str, str, str | None]]:
    return [(e.slot_at.strftime("%m-%d %H:%M"), e.outcome, e.reason) for e in entries]


async def slot_row(replica: Replica, execution_id: str) -> ScheduleSlot:
    async with replica.sessions() as session:
        return await session.get(ScheduleSlot, execution_id)


async def run_requests_on_topic(bootstrap: str, prefix: str, expected: int, quiet: float = 2.0) -> Counter:
    """RunRequested execution ids starting with `prefix`, read from the start of the topic
    until `expected` were seen and nothing more arrived for `quiet` seconds."""
    consumer = AIOKafkaConsumer(
        topics.RUNS_REQUESTED, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_wait_ms=50,
    )
    await consumer.start()
    counts: Counter = Counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    last_new = loop.time()
    try:
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    execution_id = (json_value(record.value) or {}).get("execution_id", "")
                    if execution_id.startswith(prefix):
                        assert record.key == execution_id.encode()
                        counts[execution_id] += 1
                        last_new = loop.time()
            if sum(counts.values()) >= expected and loop.time() - last_new >= quiet:
                break
    finally:
        await consumer.stop()
    return counts


# --- firing on time -----------------------------------------------------------------


async def test_slots_fire_at_9am_new_york_on_both_sides_of_the_dst_change(replicas, workflow_id, kafka_bootstrap):
    clock = FakeClock(utc(2027, 3, 12, 13, 59, 50))
    replica = replicas(clock)
    await add_schedule(replica, workflow_id, evaluated_until=clock.now(), cron="0 9 * * 1-5",
                       timezone="America/New_York", calendar="XNYS")

    await replica.tick()
    clock.set(utc(2027, 3, 12, 14, 0, 2))
    await replica.tick()
    await replica.tick()
    clock.set(utc(2027, 3, 15, 13, 0, 2))  # the weekend has no slots; 2027-03-14 changed the clocks
    await replica.tick()

    expected = [f"scheduled-{workflow_id}-20270312T140000Z", f"scheduled-{workflow_id}-20270315T130000Z"]
    assert replica.publisher.execution_ids == expected
    first, second = replica.publisher.published
    assert first["trigger"] == "schedule" and first["params"] == {"symbols": ["AAPL", "MSFT"]}
    assert (first["scheduled_for"], second["scheduled_for"]) == ("2027-03-12T14:00:00Z", "2027-03-15T13:00:00Z")
    assert summary(await ledger_of(replica, workflow_id)) == [
        ("03-12 14:00", "fired", None), ("03-15 13:00", "fired", None)
    ]
    assert await run_requests_on_topic(kafka_bootstrap, f"scheduled-{workflow_id}-", 2) == Counter(expected)


async def test_every_skip_reason_is_in_the_ledger(replicas, workflow_id):
    clock = FakeClock(utc(2026, 12, 24, 13, 0))
    replica = replicas(clock)
    await add_schedule(replica, workflow_id, evaluated_until=clock.now(), cron="0 9 * * *",
                       timezone="America/New_York", calendar="XNYS", misfire_policy="none")

    for day in (24, 25, 26):
        clock.set(utc(2026, 12, day, 14, 0, 5))
        await replica.tick()
    await edit_schedule(replica, workflow_id, paused=True)
    clock.set(utc(2026, 12, 28, 14, 0, 5))
    await replica.tick()
    await edit_schedule(replica, workflow_id, paused=False)
    clock.set(utc(2026, 12, 29, 14, 0, 5))
    await replica.tick()
    clock.set(utc(2026, 12, 31, 14, 0, 5))  # down on the 30th: policy none skips the missed slot
    await replica.tick()

    entries = await ledger_of(replica, workflow_id)
    assert summary(entries) == [
        ("12-24 14:00", "fired", None),
        ("12-25 14:00", "skipped", "holiday"),
        ("12-26 14:00", "skipped", "holiday"),
        ("12-27 14:00", "skipped", "paused"),
        ("12-28 14:00", "skipped", "paused"),
        ("12-29 14:00", "fired", None),
        ("12-30 14:00", "skipped", "misfire_policy"),
        ("12-31 14:00", "fired", None),
    ]
    assert entries[1].detail == "2026-12-25 is not a XNYS trading day (holiday)"
    assert entries[2].detail == "2026-12-26 is not a XNYS trading day (weekend)"
    assert len(replica.publisher.published) == 3
    assert all(e.execution_id == f"scheduled-{workflow_id}-{e.slot_at:%Y%m%dT%H%M%SZ}" for e in entries)


# --- downtime -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("all", [("01:00", "skipped", "misfire_policy"), ("02:00", "skipped", "misfire_policy"),
                 ("03:00", "recovered", None), ("04:00", "recovered", None), ("05:00", "recovered", None)]),
        ("last", [("01:00", "skipped", "misfire_policy"), ("02:00", "skipped", "misfire_policy"),
                  ("03:00", "skipped", "misfire_policy"), ("04:00", "skipped", "misfire_policy"),
                  ("05:00", "recovered", None)]),
        ("none", [(f"0{h}:00", "skipped", "misfire_policy") for h in range(1, 6)]),
    ],
)
async def test_downtime_is_handled_by_the_misfire_policy(replicas, workflow_id, policy, expected):
    clock = FakeClock(utc(2027, 1, 4, 0, 0, 30))
    before = replicas(clock, "before-downtime")
    await add_schedule(before, workflow_id, evaluated_until=clock.now(), misfire_policy=policy,
                       misfire_window_seconds=3 * 3600)
    await before.tick()
    await before.close()

    clock.set(utc(2027, 1, 4, 5, 10, 30))  # no scheduler ran for 5h10m; the window is 3h
    after = replicas(clock, "after-downtime")
    await after.tick()
    await after.tick()

    entries = await ledger_of(after, workflow_id)
    assert [(e.slot_at.strftime("%H:%M"), e.outcome, e.reason) for e in entries] == expected
    fired = [e.execution_id for e in entries if e.outcome == "recovered"]
    assert after.publisher.execution_ids == fired
    assert all(e.recorded_by == "after-downtime" for e in entries)


async def test_downtime_longer_than_the_lookback_is_summarised(replicas, workflow_id):
    clock = FakeClock(utc(2027, 2, 1, 0, 30))
    replica = replicas(clock, max_lookback=timedelta(hours=2))
    await add_schedule(replica, workflow_id, evaluated_until=utc(2027, 1, 1), misfire_policy="none")

    await replica.tick()

    entries = await ledger_of(replica, workflow_id)
    assert entries[0].execution_id is None and entries[0].reason == "misfire_policy"
    assert "were not evaluated (older than SCHEDULER_MAX_LOOKBACK_SECONDS)" in entries[0].detail
    assert summary(entries[1:]) == [("01-31 23:00", "skipped", "misfire_policy"),
                                    ("02-01 00:00", "skipped", "misfire_policy")]


# --- max_active_runs ----------------------------------------------------------------


async def finish(replica: Replica, workflow_id: str, execution_id: str, clock: FakeClock) -> None:
    async with replica.sessions.begin() as session:
        await run_tracking.apply_run_event(
            session, RunSucceeded(workflow_id=workflow_id, execution_id=execution_id), now=clock.now()
        )


async def test_max_active_runs_queues_slots_under_policy_all(replicas, workflow_id):
    clock = FakeClock(utc(2027, 1, 4, 0, 0, 30))
    replica = replicas(clock)
    await add_schedule(replica, workflow_id, evaluated_until=clock.now(), cron="* * * * *", max_active_runs=1,
                       misfire_policy="all", misfire_window_seconds=3600)
    for minute in (1, 2, 3):
        clock.set(utc(2027, 1, 4, 0, minute, 1))
        await replica.tick()
    first = f"scheduled-{workflow_id}-20270104T000100Z"
    assert replica.publisher.execution_ids == [first]

    await finish(replica, workflow_id, first, clock)
    clock.advance(seconds=5)
    await replica.tick()

    assert replica.publisher.execution_ids == [first, f"scheduled-{workflow_id}-20270104T000200Z"]
    entries = await ledger_of(replica, workflow_id)
    assert summary(entries) == [
        ("01-04 00:01", "fired", None),
        ("01-04 00:02", "queued", "max_active_runs"),
        ("01-04 00:03", "queued", "max_active_runs"),
        ("01-04 00:02", "fired", None),
    ]
    assert "1 run(s) active, max_active_runs is 1" in entries[1].detail
    assert entries[3].detail == "fired on time; waited 66s for a free run"
    assert (await slot_row(replica, f"scheduled-{workflow_id}-20270104T000300Z")).state == "queued"


async def test_max_active_runs_keeps_only_the_newest_queued_slot_under_policy_last(replicas, workflow_id):
    clock = FakeClock(utc(2027, 1, 4, 0, 0, 30))
    replica = replicas(clock)
    await add_schedule(replica, workflow_id, evaluated_until=clock.now(), cron="* * * * *", max_active_runs=1,
                       misfire_policy="last", misfire_window_seconds=3600)
    for minute in (1, 2, 3):
        clock.set(utc(2027, 1, 4, 0, minute, 1))
        await replica.tick()
    await finish(replica, workflow_id, f"scheduled-{workflow_id}-20270104T000100Z", clock)
    clock.advance(seconds=5)
    await replica.tick()

    assert summary(await ledger_of(replica, workflow_id)) == [
        ("01-04 00:01", "fired", None),
        ("01-04 00:02", "queued", "max_active_runs"),
        ("01-04 00:02", "skipped", "max_active_runs"),
        ("01-04 00:03", "queued", "max_active_runs"),
        ("01-04 00:03", "fired", None),
    ]
    assert replica.publisher.execution_ids[-1] == f"scheduled-{workflow_id}-20270104T000300Z"


async def test_max_active_runs_skips_slots_under_policy_none(replicas, workflow_id):
    clock = FakeClock(utc(2027, 1, 4, 0, 0, 30))
    replica = replicas(clock)
    await add_schedule(replica, workflow_id, evaluated_until=clock.now(), cron="* * * * *", max_active_runs=1,
                       misfire_policy="none")
    for minute in (1, 2):
        clock.set(utc(2027, 1, 4, 0, minute, 1))
        await replica.tick()

    entries = await ledger_of(replica, workflow_id)
    assert summary(entries) == [("01-04 00:01", "fired", None), ("01-04 00:02", "skipped", "max_active_runs")]
    assert "misfire policy 'none' skips the slot" in entries[1].detail


async def test_a_queued_slot_that_waits_past_the_window_is_skipped(replicas, workflow_id):
    clock = FakeClock(utc(2027, 1, 4, 0, 30))
    replica = replicas(clock)
    await add_schedule(replica, workflow_id, evaluated_until=clock.now(), max_active_runs=1, misfire_policy="all",
                       misfire_window_seconds=1800)
    for hour in (1, 2, 3):
        clock.set(utc(2027, 1, 4, hour, 0, 1))
        await replica.tick()

    entries = await ledger_of(replica, workflow_id)
    assert summary(entries) == [
        ("01-04 01:00", "fired", None),
        ("01-04 02:00", "queued", "max_active_runs"),
        ("01-04 02:00", "skipped", "max_active_runs"),
        ("01-04 03:00", "queued", "max_active_runs"),
    ]
    assert "longer than the misfire window (30m00s)" in entries[2].detail


async def test_a_run_that_never_ends_stops_counting_after_the_timeout(replicas, workflow_id):
    clock = FakeClock(utc(2027, 1, 4, 0, 30))
    replica = replicas(clock, active_run_timeout=timedelta(minutes=90))
    await add_schedule(replica, workflow_id, evaluated_until=clock.now(), max_active_runs=1, misfire_policy="none")
    for hour in (1, 2, 3):
        clock.set(utc(2027, 1, 4, hour, 0, 1))
        await replica.tick()

    assert summary(await ledger_of(replica, workflow_id)) == [
        ("01-04 01:00", "fired", None),
        ("01-04 02:00", "skipped", "max_active_runs"),
        ("01-04 03:00", "fired", None),  # the 01:00 run was requested 2h ago and never heard of
    ]


async def test_pausing_skips_the_queued_slots(replicas, workflow_id):
    clock = FakeClock(utc(2027, 1, 4, 0, 30))
    replica = replicas(clock)
    await add_schedule(replica, workflow_id, evaluated_until=clock.now(), max_active_runs=1, misfire_policy="all")
    for hour in (1, 2):
        clock.set(utc(2027, 1, 4, hour, 0, 1))
        await replica.tick()
    await edit_schedule(replica, workflow_id, paused=True)
    clock.advance(seconds=1)
    await replica.tick()

    assert summary(await ledger_of(replica, workflow_id))[-1] == ("01-04 02:00", "skipped", "paused")


# --- exactly once -------------------------------------------------------------------


async def test_a_publisher_killed_after_the_claim_is_retried_by_another_replica(
    replicas, workflow_id, kafka_publisher, kafka_bootstrap
):
    clock = FakeClock(utc(2027, 1, 5, 0, 0, 30))
    doomed_publisher = RecordingPublisher(kafka_publisher)
    doomed = replicas(clock, "doomed", publisher=doomed_publisher)
    survivor = replicas(clock, "survivor")
    await add_schedule(doomed, workflow_id, evaluated_until=clock.now())
    execution_id = f"scheduled-{workflow_id}-20270105T010000Z"

    clock.set(utc(2027, 1, 5, 1, 0, 1))
    doomed_publisher.hang = True
    tick = asyncio.create_task(doomed.tick())
    await doomed_publisher.entered.wait()
    tick.cancel()  # killed between the claim and the publication
    with pytest.raises(asyncio.CancelledError):
        await tick

    claimed = await slot_row(survivor, execution_id)
    assert (claimed.state, claimed.claimed_by, claimed.attempts) == ("claimed", "doomed", 1)
    await survivor.tick()  # the lease still holds: nobody else publishes yet
    assert survivor.publisher.published == []

    clock.advance(seconds=LEASE.total_seconds() + 1)
    await survivor.tick()

    assert survivor.publisher.execution_ids == [execution_id]
    published = await slot_row(survivor, execution_id)
    assert (published.state, published.claimed_by, published.attempts) == ("published", "survivor", 2)
    [entry] = await ledger_of(survivor, workflow_id)
    assert (entry.outcome, entry.execution_id) == ("fired", execution_id)
    assert entry.detail == "fired on time (published on attempt 2)"
    assert await run_requests_on_topic(kafka_bootstrap, f"scheduled-{workflow_id}-", 1) == Counter({execution_id: 1})
    # the re-published event is the one the claim fixed: same event id as its first attempt would have had
    assert json.loads(claimed.event)["event_id"] == survivor.publisher.published[0]["event_id"]


async def test_a_failed_publish_is_recorded_and_retried(replicas, workflow_id):
    clock = FakeClock(utc(2027, 1, 6, 0, 0, 30))
    replica = replicas(clock)
    await add_schedule(replica, workflow_id, evaluated_until=clock.now())
    replica.publisher.failures_left = 1

    clock.set(utc(2027, 1, 6, 1, 0, 1))
    await replica.tick()
    assert replica.publisher.published == []
    clock.advance(seconds=3)
    await replica.tick()

    execution_id = f"scheduled-{workflow_id}-20270106T010000Z"
    assert replica.publisher.execution_ids == [execution_id]
    failed, fired = await ledger_of(replica, workflow_id)
    assert (failed.outcome, fired.outcome) == ("publish_failed", "fired")
    assert "publishing attempt 1 failed (ConnectionError: broker unreachable); retried in 2s" == failed.detail
    assert fired.detail == "fired on time (published on attempt 2)"
    row = await slot_row(replica, execution_id)
    assert (row.state, row.attempts, row.last_error) == ("published", 2, "ConnectionError: broker unreachable")


async def test_replicas_ticking_together_fire_each_slot_once(replicas, workflow_id, kafka_bootstrap):
    clock = FakeClock(utc(2027, 1, 7, 0, 0, 30))
    one, two, three = (replicas(clock, name) for name in ("one", "two", "three"))
    await add_schedule(one, workflow_id, evaluated_until=clock.now(), cron="* * * * *")

    for _ in range(40):
        clock.advance(seconds=15)
        await asyncio.gather(one.tick(), two.tick(), three.tick())

    published = one.publisher.execution_ids + two.publisher.execution_ids + three.publisher.execution_ids
    assert len(published) == 10 and len(set(published)) == 10
    entries = await ledger_of(one, workflow_id)
    fired = Counter(e.execution_id for e in entries if e.outcome == "fired")
    deduplicated = Counter(e.execution_id for e in entries if e.outcome == "deduplicated")
    assert fired == Counter(set(published))
    # every replica that lost the race for a slot says so
    assert deduplicated == Counter({execution_id: 2 for execution_id in published})
    assert await run_requests_on_topic(kafka_bootstrap, f"scheduled-{workflow_id}-", 10) == Counter(set(published))


async def test_requested_runs_count_as_active(replicas, workflow_id):
    clock = FakeClock(utc(2027, 1, 8, 0, 30))
    replica = replicas(clock)
    await add_schedule(replica, workflow_id, evaluated_until=clock.now())
    clock.set(utc(2027, 1, 8, 1, 0, 1))
    await replica.tick()

    async with replica.sessions() as session:
        [tracked] = list(await session.scalars(select(TrackedRun).where(TrackedRun.workflow_id == workflow_id)))
        assert tracked.status == "requested"
        assert await run_tracking.count_active_runs(
            session, workflow_id, now=clock.now(), timeout=timedelta(hours=1)
        ) == 1
    await finish(replica, workflow_id, tracked.execution_id, clock)
    async with replica.sessions() as session:
        assert await run_tracking.count_active_runs(
            session, workflow_id, now=clock.now(), timeout=timedelta(hours=1)
        ) == 0
