"""Run states through the artifacts API on a real PostgreSQL: external, partial with its
failed items, skipped steps, and abandoned (derived at read time, filterable)."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.artifacts.database import new_engine, new_sessionmaker
from services.artifacts.ingest.store import store_batch
from services.artifacts.main import create_app
from services.artifacts.migrate import migrate
from services.artifacts.settings import ArtifactsSettings
from shared.database import normalize_database_url
from shared.events import (
    ArtifactCreated,
    FailedItem,
    RunFailed,
    RunPartiallySucceeded,
    RunRequested,
    RunStarted,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from shared.http import serving

pytestmark = pytest.mark.integration

WF = "ibkr_trading_signal_workflow"
STEPS = ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]
ABANDONED_AFTER = timedelta(hours=6)
NOW = datetime.now(UTC)
TSLA = FailedItem(item="TSLA", step="fetch_market_data",
                  reason="no security definition: IBKR does not know this contract (code 200)", code=200)


def ids(execution_id: str, workflow_id: str = WF) -> dict:
    return {"workflow_id": workflow_id, "execution_id": execution_id}


def events() -> list:
    recent = NOW - timedelta(minutes=5)
    old = NOW - ABANDONED_AFTER - timedelta(hours=1)
    partial, failed, live, quiet = ids("run-partial"), ids("run-failed"), ids("run-live"), ids("run-quiet")
    return [
        RunRequested(**partial, trigger="manual", occurred_at=recent),
        RunStarted(**partial, steps=STEPS, params={"symbols": ["TSLA", "AAPL"]}, occurred_at=recent),
        *[StepSucceeded(**partial, step_name=name, occurred_at=recent) for name in STEPS],
        RunPartiallySucceeded(**partial, failed_items=[TSLA], occurred_at=recent + timedelta(seconds=9)),
        RunStarted(**failed, steps=STEPS, occurred_at=recent),
        StepStarted(**failed, step_name=STEPS[0], occurred_at=recent),
        StepFailed(**failed, step_name=STEPS[0], error="NoMarketDataError: no market data", occurred_at=recent),
        *[StepSkipped(**failed, step_name=name, reason=f"step {STEPS[0]} failed", occurred_at=recent)
          for name in STEPS[1:]],
        RunFailed(**failed, error=f"step {STEPS[0]} failed", occurred_at=recent),
        RunStarted(**live, steps=STEPS, occurred_at=recent),
        RunRequested(**quiet, trigger="schedule", occurred_at=old),
        RunStarted(**quiet, steps=STEPS, occurred_at=old),
        ArtifactCreated(**ids("my_dag__2026-11-28", "my_dag"), step_name="train", name="validation metrics",
                        kind="metrics", payload={"auc": 0.71}, dag_id="my_dag", task_id="train", occurred_at=old),
    ]


@pytest.fixture(scope="module")
async def client(new_database) -> AsyncIterator[httpx.AsyncClient]:
    url = new_database()
    await migrate(url)
    engine = new_engine(normalize_database_url(url))
    try:
        async with new_sessionmaker(engine)() as session, session.begin():
            await store_batch(session, events())
    finally:
        await engine.dispose()
    settings = ArtifactsSettings(
        database_url=url,
        artifacts_consumer_enabled=False,
        artifacts_run_abandoned_after_seconds=ABANDONED_AFTER.total_seconds(),
    )
    async with serving(create_app(settings)) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        yield http


async def test_each_run_has_the_state_that_tells_what_happened(client):
    runs = {r["execution_id"]: r for r in (await client.get("/api/runs")).json()["runs"]}
    assert {name: run["status"] for name, run in runs.items()} == {
        "run-partial": "partial",
        "run-failed": "failed",
        "run-live": "running",
        "run-quiet": "abandoned",
        "my_dag__2026-11-28": "external",
    }
    assert runs["run-partial"]["failed_items"] == [TSLA.model_dump()]
    assert runs["run-quiet"]["error"].startswith("no event since ")
    assert (runs["run-failed"]["steps_finished"], runs["run-failed"]["steps_total"]) == (1, 4)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("abandoned", {"run-quiet"}),
        ("running", {"run-live"}),
        ("partial", {"run-partial"}),
        ("external", {"my_dag__2026-11-28"}),
        ("succeeded", set()),
    ],
)
async def test_the_status_filter_knows_every_state(client, status, expected):
    body = (await client.get("/api/runs", params={"status": status})).json()
    assert {r["execution_id"] for r in body["runs"]} == expected
    assert body["total"] == len(expected)


async def test_an_unknown_status_is_a_422(client):
    assert (await client.get("/api/runs", params={"status": "done"})).status_code == 422


async def test_run_detail_has_failed_items_and_skipped_steps_with_the_reason(client):
    partial = (await client.get("/api/runs/run-partial")).json()
    assert (partial["status"], partial["progress"]) == ("partial", 1.0)
    assert partial["failed_items"][0]["item"] == "TSLA" and "code 200" in partial["failed_items"][0]["reason"]
    failed = (await client.get("/api/runs/run-failed")).json()
    assert [(s["status"], s["skipped_reason"]) for s in failed["steps"]] == [
        ("failed", None), *[("skipped", "step fetch_market_data failed")] * 3
    ]
    quiet = (await client.get("/api/runs/run-quiet")).json()
    assert quiet["status"] == "abandoned" and "ARTIFACTS_RUN_ABANDONED_AFTER_SECONDS" in quiet["error"]


async def test_an_external_runs_step_is_external_not_running(client):
    external = (await client.get("/api/runs/my_dag__2026-11-28")).json()
    assert [(s["step_name"], s["status"]) for s in external["steps"]] == [("train", "external")]
    assert external["duration_seconds"] is None and external["finished_at"] is None
