"""The scheduler service through its HTTP API: two replicas (apps with their own engine,
broker connection and loop) on one real PostgreSQL and the real broker, sharing a fake
clock. The tests of this module follow one timeline and run in file order."""

from __future__ import annotations

from sqlalchemy import make_url

from services.scheduler.migrate import scheduler_alembic_config
from shared.database import head_revision

import asyncio
import json
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from services.scheduler.main import create_app
from services.scheduler.migrate import migrate
from services.scheduler.rows import TrackedRun
from services.scheduler.settings import SchedulerSettings
from shared import topics
from shared.database import normalize_database_url
from shared.events import RunStarted, RunSucceeded
from shared.startup import running
from tests.support import json_value

# the code's head, whatever migration was added last
HEAD = head_revision(scheduler_alembic_config(make_url("postgresql://unused@127.0.0.1/unused")))

pytestmark = pytest.mark.integration

TOKEN = "scheduler-test-token"
WORKFLOW = "ibkr_trading_signal_workflow"
START = datetime(2026, 12, 17, 20, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        assert now >= self._now, "the timeline of this module only goes forward"
        self._now = now

    def advance(self, **delta) -> None:
        self._now += timedelta(**delta)


def settings_for(database_url: str, kafka_env: dict[str, str], instance_id: str) -> SchedulerSettings:
    return SchedulerSettings(
        database_url=database_url,
        scheduler_instance_id=instance_id,
        scheduler_tick_seconds=0.05,
        ibflow_api_token=TOKEN,
        **{key.lower(): value for key, value in kafka_env.items()},
    )


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture(scope="module")
async def database_url(new_database) -> str:
    url = new_database("scheduler_service")
    await migrate(url)
    return url


@pytest.fixture(scope="module")
async def replicas(database_url, kafka_env, clock):
    first = create_app(settings_for(database_url, kafka_env, "replica-a"), clock=clock)
    second = create_app(settings_for(database_url, kafka_env, "replica-b"), clock=clock)
    async with running(first):
        async with running(second):
            yield first, second
        await sole_member_again(first)


async def sole_member_again(app) -> None:
    """Wait until the remaining replica owns every partition of its consumer group again:
    tansu never settles a group whose members all leave in the middle of a rebalance."""
    [subscriber] = app.state.runtime.broker.subscribers

    async def owns_all_partitions():
        return len(subscriber.consumer.assignment()) == app.state.runtime.settings.kafka_topic_partitions

    await eventually(owns_all_partitions)


def client_of(app, token: str | None = TOKEN) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scheduler", headers=headers)


@pytest.fixture(scope="module")
async def api(replicas):
    async with client_of(replicas[0]) as client:
        yield client


@pytest.fixture(scope="module")
async def other_replica_api(replicas):
    async with client_of(replicas[1]) as client:
        yield client


@pytest.fixture(scope="module")
async def sessions(database_url):
    engine = create_async_engine(normalize_database_url(database_url))
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def eventually(probe, timeout: float = 30.0, interval: float = 0.1):
    """Poll `probe` until it returns something truthy (it may raise AssertionError meanwhile)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = await probe()
            if result:
                return result
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{probe.__name__} did not come true within {timeout}s")
        await asyncio.sleep(interval)


async def read_topic(bootstrap: str, topic: str, wanted, expected: int, quiet: float = 2.0) -> list[dict]:
    """Values (JSON) on `topic` for which `wanted(value)` holds, read from the start until
    `expected` were seen and nothing more came for `quiet` seconds."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    found: list[dict] = []
    loop = asyncio.get_running_loop()
    deadline, last_new = loop.time() + 60, loop.time()
    try:
        while loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    value = json_value(record.value)
                    if value is not None and wanted(value):
                        found.append(value)
                        last_new = loop.time()
            if len(found) >= expected and loop.time() - last_new >= quiet:
                break
    finally:
        await consumer.stop()
    return found


async def patch(api: httpx.AsyncClient, **changes) -> dict:
    response = await api.patch(f"/api/workflows/{WORKFLOW}/schedule", json=changes)
    assert response.status_code == 200, response.text
    return response.json()


# --- health and catalogue -----------------------------------------------------------


async def test_health_names_the_database_its_revision_the_broker_and_the_loop(api, database_url):
    async def healthy():
        response = await api.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok", body
        return body

    body = await eventually(healthy)
    assert body["service"] == "scheduler"
    database = body["components"]["database"]["detail"]
    url = normalize_database_url(database_url)
    assert (database["host"], database["port"], database["database"]) == (url.host, url.port, url.database)
    assert database["revision"] == database["head"] == HEAD
    assert database["version_table"] == "alembic_version_scheduler"
    if url.password:
        assert url.password not in json.dumps(body)
    assert body["components"]["broker"]["status"] == "ok"
    loop = body["components"]["loop"]["detail"]
    assert loop["instance_id"] == "replica-a" and loop["last_tick_at"] is not None


async def test_the_default_workflow_is_seeded_from_the_environment(api):
    response = await api.get("/api/workflows")
    assert response.status_code == 200
    [workflow] = response.json()["workflows"]
    assert workflow["workflow_id"] == WORKFLOW
    assert workflow["steps"] == ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]
    schedule = workflow["schedule"]
    assert {k: schedule[k] for k in ("cron", "timezone", "paused", "misfire_policy", "calendar")} == {
        "cron": "0 9 * * 1-5", "timezone": "America/New_York", "paused": False, "misfire_policy": "last",
        "calendar": "XNYS",
    }
    assert schedule["default_params"] == {"symbols": ["AAPL", "MSFT", "IBM", "GOOG"]}
    assert schedule["max_active_runs"] == 1 and schedule["misfire_window_seconds"] == 3600
    assert workflow["next_fire_times"][0] == "2026-12-18T14:00:00Z"
    assert workflow["next_fire_times_local"][0] == "2026-12-18T09:00:00-05:00"


async def test_the_next_20_fire_times_from_2026_12_18_skip_the_exchange_holidays(api, clock):
    clock.set(datetime(2026, 12, 18, tzinfo=UTC))
    response = await api.get(f"/api/workflows/{WORKFLOW}", params={"count": 20})
    assert response.status_code == 200
    body = response.json()
    assert len(body["next_fire_times"]) == 20
    days = [t[:10] for t in body["next_fire_times_local"]]
    assert "2026-12-25" not in days and "2027-01-01" not in days
    assert days[:6] == ["2026-12-18", "2026-12-21", "2026-12-22", "2026-12-23", "2026-12-24", "2026-12-28"]
    assert all(t.endswith("T14:00:00Z") for t in body["next_fire_times"])
    assert all(t.endswith("T09:00:00-05:00") for t in body["next_fire_times_local"])


async def test_a_cron_change_changes_the_next_fire_time_within_5_seconds_on_every_replica(api, other_replica_api):
    body = await patch(api, cron="30 10 * * 1-5")
    assert body["next_fire_times"][0] == "2026-12-18T15:30:00Z"

    async def seen_by_the_other_replica():
        response = await other_replica_api.get(f"/api/workflows/{WORKFLOW}")
        return response.json()["next_fire_times"][0] == "2026-12-18T15:30:00Z"

    await eventually(seen_by_the_other_replica, timeout=5.0)
    await patch(api, cron="0 9 * * 1-5")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *'"),
        ({"cron": "0 9 * *"}, "expected 5 fields"),
        ({"timezone": "Mars/Olympus_Mons"}, "unknown timezone 'Mars/Olympus_Mons'"),
        ({"calendar": "MOON"}, "unknown trading calendar 'MOON'"),
        ({"misfire_policy": "sometimes"}, "misfire_policy"),
        ({"max_active_runs": 0}, "max_active_runs"),
        ({"max_active_runs": 10**10}, "max_active_runs"),
        ({"cron": "* " * 5000}, "cron"),
        ({"paused": None}, "paused"),
        ({"colour": "blue"}, "colour"),
        ({"default_params": {"symbols": ["not a symbol"]}}, "symbols"),
    ],
)
async def test_invalid_schedule_updates_are_422_with_a_clear_message(api, changes, message):
    response = await api.patch(f"/api/workflows/{WORKFLOW}/schedule", json=changes)
    assert response.status_code == 422
    body = response.json()
    assert body["status"] == 422 and message in body["error"]
    unchanged = (await api.get(f"/api/workflows/{WORKFLOW}")).json()["schedule"]
    assert unchanged["cron"] == "0 9 * * 1-5" and unchanged["timezone"] == "America/New_York"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/workflows/nope"),
        ("PATCH", "/api/workflows/nope/schedule"),
        ("POST", "/api/workflows/nope/pause"),
        ("POST", "/api/workflows/nope/runs"),
        ("GET", "/api/workflows/nope/ledger"),
    ],
)
async def test_an_unknown_workflow_is_a_404_json(api, method, path):
    response = await api.request(method, path, json={} if method != "GET" else None)
    assert response.status_code == 404
    assert response.json() == {
        "error": "unknown workflow 'nope'; known: ibkr_trading_signal_workflow", "status": 404
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", f"/api/workflows/{WORKFLOW}/schedule"),
        ("POST", f"/api/workflows/{WORKFLOW}/pause"),
        ("POST", f"/api/workflows/{WORKFLOW}/resume"),
        ("POST", f"/api/workflows/{WORKFLOW}/runs"),
    ],
)
async def test_mutations_need_the_bearer_token(replicas, method, path):
    async with client_of(replicas[0], token=None) as anonymous, client_of(replicas[0], token="wrong") as wrong:
        for client in (anonymous, wrong):
            response = await client.request(method, path, json={})
            assert response.status_code == 401
            assert "IBFLOW_API_TOKEN" in response.json()["error"]
        assert (await anonymous.get(f"/api/workflows/{WORKFLOW}")).status_code == 200
        assert (await anonymous.get(f"/api/workflows/{WORKFLOW}/ledger")).status_code == 200


async def test_pause_and_resume(api):
    paused = await api.post(f"/api/workflows/{WORKFLOW}/pause")
    assert paused.status_code == 200
    assert paused.json()["schedule"]["paused"] is True and paused.json()["next_fire_times"] == []

    resumed = await api.post(f"/api/workflows/{WORKFLOW}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["schedule"]["paused"] is False
    assert resumed.json()["next_fire_times"][0] == "2026-12-18T14:00:00Z"


# --- manual triggers and the ledger -------------------------------------------------


async def test_manual_triggers_are_published_with_unique_ids_and_recorded(api, kafka_bootstrap):
    plain = await api.post(f"/api/workflows/{WORKFLOW}/runs")
    with_params = await api.post(f"/api/workflows/{WORKFLOW}/runs", json={"params": {"symbols": ["IBM", "BRK.B"]}})
    assert plain.status_code == with_params.status_code == 202
    ids = [plain.json()["execution_id"], with_params.json()["execution_id"]]
    assert ids[0] != ids[1] and all(i.startswith("manual-") for i in ids)
    assert plain.json() == {"execution_id": ids[0], "workflow_id": WORKFLOW, "status": "requested"}

    events = await read_topic(kafka_bootstrap, topics.RUNS_REQUESTED, lambda v: v["execution_id"] in ids, 2)
    by_id = {event["execution_id"]: event for event in events}
    assert len(events) == 2 and set(by_id) == set(ids)
    assert by_id[ids[0]]["params"] == {"symbols": ["AAPL", "MSFT", "IBM", "GOOG"]}
    assert by_id[ids[1]]["params"] == {"symbols": ["IBM", "BRK.B"]}
    assert all(e["trigger"] == "manual" and e["scheduled_for"] is None for e in events)

    ledger = (await api.get(f"/api/workflows/{WORKFLOW}/ledger", params={"outcome": "manual"})).json()["entries"]
    recorded = {entry["execution_id"]: entry for entry in ledger}
    assert set(ids) <= set(recorded)
    assert recorded[ids[1]]["trigger"] == "manual" and recorded[ids[1]]["detail"] == "requested through the API with params"


@pytest.mark.parametrize(
    "body", [{"params": {"symbols": ["aapl"]}}, {"params": {"symbols": []}}, {"params": {"colour": 1}}, {"x": 1}]
)
async def test_manual_triggers_with_bad_params_are_422(api, body):
    response = await api.post(f"/api/workflows/{WORKFLOW}/runs", json=body)
    assert response.status_code == 422
    assert response.json()["error"].startswith("invalid request")


async def test_the_ledger_pages_with_a_cursor(api):
    for _ in range(3):
        assert (await api.post(f"/api/workflows/{WORKFLOW}/runs")).status_code == 202
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.get(f"/api/workflows/{WORKFLOW}/ledger", params=params)).json()
        seen += [entry["execution_id"] for entry in page["entries"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["entries"]) == 2
    everything = (await api.get(f"/api/workflows/{WORKFLOW}/ledger", params={"limit": 500})).json()["entries"]
    assert seen == [entry["execution_id"] for entry in everything]
    assert len(seen) >= 5 and pages == (len(seen) + 1) // 2
    assert (await api.get(f"/api/workflows/{WORKFLOW}/ledger", params={"cursor": "!!"})).status_code == 422


# --- run events ---------------------------------------------------------------------


async def test_run_events_from_the_broker_track_active_runs_and_bad_ones_are_dead_lettered(
    replicas, sessions, kafka_bootstrap
):
    execution_id = f"external-{uuid.uuid4().hex}"
    marker = f"not an event {uuid.uuid4().hex}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        started = RunStarted(workflow_id=WORKFLOW, execution_id=execution_id, trigger="manual")
        await producer.send_and_wait(topics.RUNS_EVENTS, started.to_bytes(), key=started.key)

        async def status_is(expected: str):
            async with sessions() as session:
                run = await session.get(TrackedRun, execution_id)
                return run is not None and run.status == expected

        async def running():
            return await status_is("running")

        await eventually(running)
        succeeded = RunSucceeded(workflow_id=WORKFLOW, execution_id=execution_id)
        await producer.send_and_wait(topics.RUNS_EVENTS, succeeded.to_bytes(), key=succeeded.key)
        await producer.send_and_wait(topics.RUNS_EVENTS, started.to_bytes(), key=started.key)  # redelivered
        await producer.send_and_wait(topics.RUNS_EVENTS, marker.encode(), key=b"garbage")

        dead = await read_topic(kafka_bootstrap, topics.DEADLETTER,
                                lambda v: v.get("original_value") == marker and v["consumer"] == "scheduler.run_events",
                                1, quiet=0.5)
    finally:
        await producer.stop()

    assert dead[0]["source_topic"] == topics.RUNS_EVENTS and "not valid UTF-8 JSON" in dead[0]["reason"]
    assert dead[0]["source_offset"] is not None

    async def succeeded_stays():
        return await status_is("succeeded")

    await eventually(succeeded_stays)  # the redelivered run.started did not revive it


# --- two replicas -------------------------------------------------------------------


async def both_replicas_ticked_at(replicas, clock: FakeClock) -> None:
    """Wait until each replica has finished a tick that looked at the clock's current time;
    on a busy machine that can take long, and the timeline must not run ahead of it."""
    now = clock.now()

    async def ticked():
        return all(app.state.runtime.loop.last_tick_at is not None and app.state.runtime.loop.last_tick_at >= now
                   for app in replicas)

    await eventually(ticked, timeout=120, interval=0.02)


async def test_two_replicas_fire_each_slot_exactly_once_after_a_cron_change(api, replicas, clock, kafka_bootstrap):
    # a day of its own, so that runs against a long-lived broker do not see each other's slots
    day = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(days=random.randrange(20_000))
    clock.set(day + timedelta(seconds=30))
    await both_replicas_ticked_at(replicas, clock)  # both look at the jump (the slots in it are misfires)
    # each tick reads the schedule afresh, so the next advance is judged by the new cron
    await patch(api, cron="* * * * *", timezone="UTC", calendar=None, max_active_runs=None, misfire_policy="all")

    for _ in range(60):  # ten minutes of slots, ten seconds at a time, each seen by both replicas
        clock.advance(seconds=10)
        await both_replicas_ticked_at(replicas, clock)
    prefix = f"scheduled-{WORKFLOW}-{day:%Y%m%d}T"
    expected = {f"{prefix}00{minute:02d}00Z" for minute in range(1, 11)}

    async def all_fired():
        entries = (await api.get(f"/api/workflows/{WORKFLOW}/ledger", params={"limit": 500})).json()["entries"]
        return {e["execution_id"] for e in entries if e["outcome"] == "fired"} >= expected

    await eventually(all_fired, timeout=120)
    await api.post(f"/api/workflows/{WORKFLOW}/pause")

    events = await read_topic(kafka_bootstrap, topics.RUNS_REQUESTED, lambda v: v["execution_id"].startswith(prefix),
                              len(expected))
    counts = Counter(event["execution_id"] for event in events)
    assert counts == Counter(expected)  # exactly one RunRequested per slot
    entries = (await api.get(f"/api/workflows/{WORKFLOW}/ledger", params={"limit": 500})).json()["entries"]
    fired = Counter(e["execution_id"] for e in entries if e["outcome"] == "fired")
    assert all(fired[execution_id] == 1 for execution_id in expected)
    assert {e["recorded_by"] for e in entries if e["execution_id"] in expected} <= {"replica-a", "replica-b"}
