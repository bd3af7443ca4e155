"""Backfills through the scheduler's HTTP API on a real PostgreSQL and the real broker:
one run per NYSE session, released `max_active_runs` at a time as run events report
ends, each date requested once however often it is backfilled, cancelled on request,
and a scorecard run once every run has ended. The tests follow one timeline, in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.scheduler.main import create_app
from services.scheduler.migrate import migrate
from services.scheduler.settings import SchedulerSettings
from shared import topics
from shared.events import FailedItem, RunFailed, RunPartiallySucceeded, RunStarted, RunSucceeded
from shared.startup import running
from tests.support import json_value

pytestmark = pytest.mark.integration

TOKEN = "backfill-test-token"
WORKFLOW = "ibkr_trading_signal_workflow"
NOW = datetime(2026, 12, 17, 20, 0, tzinfo=UTC)
SUMMER = {"start": "2012-06-01", "end": "2012-08-31"}
JULY_WEEK = {"start": "2012-07-02", "end": "2012-07-06"}


class SlowClock:
    """A day in December 2026 whose time moves a millisecond each time it is read."""

    def __init__(self) -> None:
        self._now = NOW

    def now(self) -> datetime:
        self._now += timedelta(milliseconds=1)
        return self._now


@pytest.fixture(scope="module")
async def app(new_database, kafka_env):
    url = new_database("scheduler_backfills")
    await migrate(url)
    settings = SchedulerSettings(
        database_url=url, scheduler_instance_id="backfiller", scheduler_tick_seconds=0.05, ibflow_api_token=TOKEN,
        **{key.lower(): value for key, value in kafka_env.items()},
    )
    service = create_app(settings, clock=SlowClock())
    async with running(service):
        yield service


@pytest.fixture(scope="module")
async def api(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scheduler",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture(scope="module")
async def producer(kafka_bootstrap):
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture(scope="module")
async def requests(kafka_bootstrap):
    """Every `run.requested` of this module's workflows seen on the topic so far, by execution id."""
    consumer = AIOKafkaConsumer(topics.RUNS_REQUESTED, bootstrap_servers=kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    seen: list[dict] = []

    async def read() -> list[dict]:
        for records in (await consumer.getmany(timeout_ms=300)).values():
            for record in records:
                value = json_value(record.value)
                if value and value.get("workflow_id", "").startswith(WORKFLOW):
                    seen.append(value)
        return seen

    yield read
    await consumer.stop()


async def eventually(probe, timeout: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if result := await probe():
                return result
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{probe.__name__} did not come true within {timeout}s")
        await asyncio.sleep(0.1)


async def submit(api, **body) -> dict:
    response = await api.post(f"/api/workflows/{WORKFLOW}/backfills", json=body)
    assert response.status_code == 202, response.text
    return response.json()


async def backfill(api, backfill_id: str, runs: bool = False) -> dict:
    response = await api.get(f"/api/workflows/{WORKFLOW}/backfills/{backfill_id}", params={"runs": runs})
    assert response.status_code == 200, response.text
    return response.json()


async def counts_become(api, backfill_id: str, **expected) -> dict:
    async def matching():
        body = await backfill(api, backfill_id)
        assert {k: body[k] for k in expected} == expected, body
        return body

    return await eventually(matching)


async def end_run(producer, execution_id: str, outcome: str = "succeeded") -> None:
    ids = {"workflow_id": WORKFLOW, "execution_id": execution_id}
    ended = {
        "succeeded": RunSucceeded(**ids),
        "partial": RunPartiallySucceeded(**ids, failed_items=[FailedItem(item="TSLA", step="fetch", reason="200")]),
        "failed": RunFailed(**ids, error="step fetch_market_data failed"),
    }[outcome]
    for event in (RunStarted(**ids, trigger="backfill"), ended):
        await producer.send_and_wait(topics.RUNS_EVENTS, event.to_bytes(), key=event.key)


def backfill_requests(seen: list[dict]) -> list[dict]:
    return [v for v in seen if v["execution_id"].startswith(f"backfill-{WORKFLOW}-")]


# --- the timeline ---------------------------------------------------------------------


@pytest.fixture(scope="module")
async def summer(api):
    return await submit(api, **SUMMER, params={"symbols": ["AAPL", "MSFT"]}, max_active_runs=2)


async def test_a_summer_is_one_run_per_nyse_session(summer, api):
    assert summer["planned"] == 65
    body = await backfill(api, summer["backfill_id"], runs=True)
    dates = [run["as_of"] for run in body["runs"]]
    assert len(dates) == 65 and "2012-07-04" not in dates
    assert all(date.fromisoformat(d).weekday() < 5 for d in dates)
    assert body["runs"][0]["execution_id"] == f"backfill-{WORKFLOW}-20120601"
    assert (body["calendar"], body["params"]) == ("XNYS", {"symbols": ["AAPL", "MSFT"]})


async def test_only_max_active_runs_are_requested_at_first(summer, api, requests):
    await counts_become(api, summer["backfill_id"], planned=65, queued=63, running=2, status="running")

    async def two_requested():
        found = backfill_requests(await requests())
        assert len(found) == 2
        return found

    first, second = await eventually(two_requested)
    assert [first["execution_id"], second["execution_id"]] == [
        f"backfill-{WORKFLOW}-20120601", f"backfill-{WORKFLOW}-20120604"]
    assert first["trigger"] == "backfill"
    assert first["params"] == {"symbols": ["AAPL", "MSFT"], "as_of": "2012-06-01"}


async def test_each_end_releases_the_next_session(summer, api, producer, requests):
    await end_run(producer, f"backfill-{WORKFLOW}-20120601")
    await end_run(producer, f"backfill-{WORKFLOW}-20120604", "partial")
    await counts_become(api, summer["backfill_id"], queued=61, running=2, succeeded=1, partial=1)

    async def four_requested():
        found = backfill_requests(await requests())
        assert len(found) == 4
        return found

    found = await eventually(four_requested)
    assert [v["params"]["as_of"] for v in found[2:]] == ["2012-06-05", "2012-06-06"]


async def test_every_request_is_in_the_ledger(summer, api):
    response = await api.get(f"/api/workflows/{WORKFLOW}/ledger", params={"outcome": "backfill"})
    entries = response.json()["entries"]
    assert {e["execution_id"] for e in entries} == {
        f"backfill-{WORKFLOW}-{day}" for day in ("20120601", "20120604", "20120605", "20120606")}
    assert all(e["trigger"] == "backfill" and summer["backfill_id"] in e["detail"] for e in entries)


async def test_a_finished_backfill_requests_its_scorecard_once(api, producer, requests):
    week = await submit(api, **JULY_WEEK, max_active_runs=3)
    assert week["planned"] == 4  # no run on Independence Day
    for day in ("20120702", "20120703", "20120705"):
        await end_run(producer, f"backfill-{WORKFLOW}-{day}", "failed" if day == "20120703" else "succeeded")
    await end_run(producer, f"backfill-{WORKFLOW}-20120706")
    body = await counts_become(api, week["backfill_id"], queued=0, running=0, succeeded=3, failed=1,
                               status="failed", scorecard_execution_id=f"scorecard-{WORKFLOW}-{week['backfill_id']}")

    async def scorecard_requested():
        found = [v for v in await requests() if v["execution_id"] == body["scorecard_execution_id"]]
        assert len(found) == 1
        return found

    [request] = await eventually(scorecard_requested)
    assert (request["workflow_id"], request["trigger"]) == (f"{WORKFLOW}.scorecard", "backfill")


async def test_the_same_range_again_requests_nothing_again(api, requests):
    before = len(backfill_requests(await requests()))
    again = await submit(api, **JULY_WEEK)
    body = await counts_become(api, again["backfill_id"], planned=4, already_requested=4, queued=0, running=0,
                               succeeded=3, failed=1)
    assert not any(run["requested_by_this_backfill"] for run in (await backfill(api, again["backfill_id"], True))["runs"])
    await asyncio.sleep(1)
    assert len(backfill_requests(await requests())) == before
    deduplicated = (await api.get(f"/api/workflows/{WORKFLOW}/ledger",
                                  params={"outcome": "deduplicated"})).json()["entries"]
    assert sum(again["backfill_id"] in e["detail"] for e in deduplicated) == 4
    assert body["status"] == "failed"


async def test_cancel_stops_the_queued_sessions_and_lets_requested_runs_end(summer, api):
    response = await api.post(f"/api/workflows/{WORKFLOW}/backfills/{summer['backfill_id']}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["queued"], body["cancelled"], body["running"]) == ("cancelled", 0, 61, 2)
    assert body["cancelled_at"] is not None
    skipped = (await api.get(f"/api/workflows/{WORKFLOW}/ledger", params={"outcome": "skipped", "limit": 100}))
    cancelled = [e for e in skipped.json()["entries"] if e["reason"] == "cancelled"]
    assert len(cancelled) == 61
    again = await api.post(f"/api/workflows/{WORKFLOW}/backfills/{summer['backfill_id']}/cancel")
    assert again.status_code == 200 and again.json()["cancelled"] == 61


async def test_a_backfill_whose_runs_were_all_requested_cannot_be_cancelled(api):
    listed = (await api.get(f"/api/workflows/{WORKFLOW}/backfills")).json()["backfills"]
    assert [b["status"] for b in listed] == ["failed", "failed", "cancelled"]  # newest first
    response = await api.post(f"/api/workflows/{WORKFLOW}/backfills/{listed[0]['backfill_id']}/cancel")
    assert response.status_code == 409
    assert "every run of backfill" in response.json()["error"]


async def test_the_scorecard_can_be_requested_again(api, requests):
    response = await api.post(f"/api/workflows/{WORKFLOW}/scorecard/runs")
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["workflow_id"], body["scores"]) == (f"{WORKFLOW}.scorecard", WORKFLOW)

    async def requested():
        return [v for v in await requests() if v["execution_id"] == body["execution_id"]]

    [request] = await eventually(requested)
    assert request["trigger"] == "manual"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"start": "2012-08-31", "end": "2012-06-01"}, "start 2012-08-31 is after end 2012-06-01"),
        ({"start": "2026-12-01", "end": "2027-01-31"}, "end 2027-01-31 is after today (2026-12-17)"),
        ({"start": "2012-06-02", "end": "2012-06-03"}, "no XNYS trading session from 2012-06-02 to 2012-06-03"),
        ({"start": "1993-01-01", "end": "2012-12-31"}, "a backfill runs at most 5000"),
        ({"start": "1980-01-01", "end": "2012-06-01"}, "1980-01-01 to 2012-06-01 is longer than 20 years"),
        ({"start": "0001-01-01", "end": "0001-01-05"}, "start 0001-01-01 is before 1900-01-01"),
        ({"start": "06/01/2012", "end": "2012-06-03"}, "start: a date as YYYY-MM-DD"),
        ({"start": "2012-06-01", "end": 20120603}, "end: a date as YYYY-MM-DD"),
        ({"start": "2012-06-01", "end": "2012-06-05", "params": {"as_of": "2012-06-01"}}, "params cannot hold as_of"),
        ({"start": "2012-06-01", "end": "2012-06-05", "params": {"symbols": ["aapl"]}}, "params.symbols"),
        ({"start": "2012-06-01", "end": "2012-06-05", "max_active_runs": 0}, "max_active_runs"),
        ({"start": "2012-06-01", "end": "2012-06-05", "max_active_runs": "4"}, "max_active_runs"),
        ({"start": "2012-06-01", "end": "2012-06-05", "surprise": 1}, "surprise"),
        ({"end": "2012-06-05"}, "start"),
    ],
)
async def test_a_backfill_that_cannot_be_planned_is_422_with_the_reason(api, body, problem):
    response = await api.post(f"/api/workflows/{WORKFLOW}/backfills", json=body)
    assert response.status_code == 422, response.text
    assert problem in response.json()["error"]


async def test_unknown_workflows_and_backfills_are_404_and_mutations_need_the_token(app, api):
    assert (await api.post("/api/workflows/nope/backfills", json=JULY_WEEK)).status_code == 404
    assert (await api.get(f"/api/workflows/{WORKFLOW}/backfills/{'0' * 32}")).status_code == 404
    assert (await api.post(f"/api/workflows/{WORKFLOW}/backfills/{'0' * 32}/cancel")).status_code == 404
    assert (await api.get(f"/api/workflows/{WORKFLOW}/backfills/not-an-id")).status_code == 422
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scheduler") as anonymous:
        assert (await anonymous.post(f"/api/workflows/{WORKFLOW}/backfills", json=JULY_WEEK)).status_code == 401
        assert (await anonymous.post(f"/api/workflows/{WORKFLOW}/scorecard/runs")).status_code == 401
        assert (await anonymous.get(f"/api/workflows/{WORKFLOW}/backfills")).status_code == 200
