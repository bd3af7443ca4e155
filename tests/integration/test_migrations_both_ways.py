"""Migrations both ways on a populated database (runs, steps, artifacts, logs, schedules,
slots, ledger, tracked runs, backfills): every revision down to the first and up again,
one step at a time, keeps what the older schema can hold; and `ibflow migrate --to` /
`--status` on the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from services.artifacts import migrate as artifacts_migrations
from services.artifacts.database import new_engine, new_sessionmaker
from services.artifacts.ingest.store import store_batch
from services.artifacts.main import create_app
from services.artifacts.settings import ArtifactsSettings
from services.scheduler import migrate as scheduler_migrations
from shared.database import normalize_database_url
from shared.events import (
    ArtifactCreated,
    FailedItem,
    LogRecorded,
    RunFailed,
    RunPartiallySucceeded,
    RunRequested,
    RunStarted,
    RunSucceeded,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from shared.startup import running

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)
WF = "ibkr_trading_signal_workflow"
STEPS = ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]


def run_events(execution_id: str, outcome: str, at: datetime) -> list:
    events = [RunRequested(workflow_id=WF, execution_id=execution_id, trigger="manual", occurred_at=at),
              RunStarted(workflow_id=WF, execution_id=execution_id, steps=STEPS, occurred_at=at)]
    step_at = at
    for step in STEPS[:2]:
        step_at += timedelta(seconds=1)
        events += [StepStarted(workflow_id=WF, execution_id=execution_id, step_name=step, occurred_at=step_at),
                   StepSucceeded(workflow_id=WF, execution_id=execution_id, step_name=step, occurred_at=step_at)]
    end = at + timedelta(minutes=1)
    if outcome == "succeeded":
        events.append(RunSucceeded(workflow_id=WF, execution_id=execution_id, occurred_at=end))
    elif outcome == "partial":
        events.append(RunPartiallySucceeded(workflow_id=WF, execution_id=execution_id, occurred_at=end, failed_items=[
            FailedItem(item="TSLA", step="fetch_market_data", reason="no security definition", code=200)]))
    elif outcome == "failed":
        events += [
            StepStarted(workflow_id=WF, execution_id=execution_id, step_name=STEPS[2], occurred_at=end),
            StepFailed(workflow_id=WF, execution_id=execution_id, step_name=STEPS[2], error="boom", occurred_at=end),
            StepSkipped(workflow_id=WF, execution_id=execution_id, step_name=STEPS[3], reason="step generate_signals "
                        "failed", occurred_at=end),
            RunFailed(workflow_id=WF, execution_id=execution_id, error="generate_signals failed", occurred_at=end),
        ]
    events += [
        ArtifactCreated(workflow_id=WF, execution_id=execution_id, step_name=STEPS[0], name="market_data_summary",
                        kind="table", payload={"rows": [1, 2, 3]}, occurred_at=at + timedelta(seconds=2)),
        *(LogRecorded(workflow_id=WF, execution_id=execution_id, step_name=STEPS[0], message=f"line {i}",
                      fields={"i": i}, occurred_at=at + timedelta(seconds=2)) for i in range(5)),
    ]
    return events


RUNS = {"m-succeeded": "succeeded", "m-partial": "partial", "m-failed": "failed", "m-running": "running"}


async def sql(url: str, statement: str, **params):
    engine = new_engine(normalize_database_url(url), pool_size=1)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement), params)
            return result.all() if result.returns_rows else None
    finally:
        await engine.dispose()


async def populate(url: str) -> None:
    engine = new_engine(normalize_database_url(url), pool_size=1)
    try:
        async with new_sessionmaker(engine).begin() as session:
            events = [e for execution_id, outcome in RUNS.items()
                      for e in run_events(execution_id, outcome, NOW - timedelta(hours=len(execution_id)))]
            events.append(ArtifactCreated(workflow_id="my_dag", execution_id="my_dag__2026-11-28", step_name="train",
                                          name="validation metrics", kind="metrics", payload={"auc": 0.71},
                                          dag_id="my_dag", task_id="train"))
            await store_batch(session, events)
    finally:
        await engine.dispose()
    await sql(url, """
        INSERT INTO schedules (workflow_id, cron, timezone, paused, misfire_policy, misfire_window_seconds,
                               max_active_runs, calendar, default_params, evaluated_until, created_at, updated_at)
        VALUES (:wf, '30 15 * * 1-5', 'America/New_York', false, 'last', 600, 2, 'XNYS',
                '{"symbols": ["AAPL", "IBM"]}', now(), now(), now())
    """, wf=WF)
    for execution_id, trigger, state in (("scheduled-x-20261201T143000Z", "schedule", "published"),
                                         ("manual-abc", "manual", "published"),
                                         ("backfill-x-20120601", "backfill", "published")):
        await sql(url, """
            INSERT INTO schedule_slots (execution_id, workflow_id, trigger, slot_at, state, outcome, detail, params,
                                        event, attempts, created_at)
            VALUES (:id, :wf, :trigger, now(), :state, 'fired', '', '{}', '{}', 1, now())
        """, id=execution_id, wf=WF, trigger=trigger, state=state)
    await sql(url, """
        INSERT INTO schedule_ledger (workflow_id, execution_id, slot_at, trigger, outcome, reason, detail,
                                     recorded_by, recorded_at)
        VALUES (:wf, 'scheduled-x-20261201T143000Z', now(), 'schedule', 'fired', NULL, '', 'test', now()),
               (:wf, NULL, now(), 'schedule', 'skipped', 'holiday', 'NYSE closed', 'test', now())
    """, wf=WF)
    await sql(url, """
        INSERT INTO tracked_runs (execution_id, workflow_id, status, updated_at)
        VALUES ('m-succeeded', :wf, 'succeeded', now()), ('m-partial', :wf, 'partial', now()),
               ('m-running', :wf, 'running', now())
    """, wf=WF)
    await sql(url, """
        INSERT INTO backfills (backfill_id, workflow_id, start_date, end_date, calendar, params, max_active_runs,
                               state, created_at, updated_at)
        VALUES ('bf1', :wf, '2012-06-01', '2012-06-01', 'XNYS', '{}', 1, 'released', now(), now())
    """, wf=WF)


async def what_is_there(url: str) -> dict:
    """What every schema since the first can hold."""
    return {
        "runs": await sql(url, "SELECT execution_id, workflow_id, status FROM runs ORDER BY 1"),
        "steps": await sql(url, "SELECT execution_id, step_name, status, attempt FROM run_steps ORDER BY 1, 2"),
        "artifacts": await sql(url, "SELECT artifact_id, name, kind, execution_id, payload::text, dag_id "
                                    "FROM artifacts ORDER BY 1"),
        "logs": await sql(url, "SELECT event_id, execution_id, message, fields::text FROM log_records ORDER BY 1"),
        "schedules": await sql(url, "SELECT workflow_id, cron, timezone, max_active_runs, default_params::text "
                                    "FROM schedules"),
        "slots": await sql(url, "SELECT execution_id, trigger, state FROM schedule_slots "
                                "WHERE trigger <> 'backfill' ORDER BY 1"),
        "ledger": await sql(url, "SELECT workflow_id, execution_id, outcome, reason FROM schedule_ledger ORDER BY id"),
        "tracked": await sql(url, "SELECT execution_id, status FROM tracked_runs ORDER BY 1"),
    }


# What the oldest schema has no words for, folded into the nearest ones it has.
FOLDED_RUNS = {"m-partial": "failed", "my_dag__2026-11-28": "running"}
FOLDED_STEPS = {"skipped": "pending", "external": "running"}


def folded(there: dict) -> dict:
    return there | {
        "runs": [(e, w, FOLDED_RUNS.get(e, s)) for e, w, s in there["runs"]],
        "steps": [(e, n, FOLDED_STEPS.get(s, s), a) for e, n, s, a in there["steps"]],
        "tracked": [(e, "succeeded" if s == "partial" else s) for e, s in there["tracked"]],
    }


@pytest.fixture
async def populated(new_database) -> AsyncIterator[str]:
    url = new_database("both_ways")
    await artifacts_migrations.migrate(url)
    await scheduler_migrations.migrate(url)
    await populate(url)
    yield url


async def test_every_revision_goes_down_and_up_again_keeping_what_the_older_schema_holds(populated):
    url = populated
    at_head = await what_is_there(url)
    assert {status for _, _, status in at_head["runs"]} == {"succeeded", "partial", "failed", "running", "external"}
    assert len(at_head["logs"]) == 20 and len(at_head["artifacts"]) == 5

    for module in (artifacts_migrations, scheduler_migrations):
        status = await module.status(url)
        first = status.revisions[0].revision
        # one step at a time, each downgrade and the upgrade back
        for _ in status.revisions[1:]:
            before = (await module.status(url)).current
            below = await module.migrate(url, "-1")
            assert below != before
            assert await module.migrate(url, before) == before
            assert await module.migrate(url, "-1") == below
        assert (await module.status(url)).current == first

    at_first = await what_is_there(url)
    assert at_first == folded(at_head)
    assert await sql(url, "SELECT to_regclass('backfills') IS NULL AND to_regclass('artifacts_retention_ledger') "
                          "IS NULL AND to_regclass('scheduler_retention_ledger') IS NULL") == [(True,)]

    for module in (artifacts_migrations, scheduler_migrations):
        status = await module.status(url)
        assert await module.migrate(url) == status.head
    # The migrations to external runs and steps recognise the outside producer's run again.
    external = "my_dag__2026-11-28"
    assert await what_is_there(url) == folded(at_head) | {
        "runs": [(e, w, "external" if e == external else s) for e, w, s in folded(at_head)["runs"]],
        "steps": [(e, n, "external" if e == external else s, a) for e, n, s, a in folded(at_head)["steps"]],
    }


async def test_the_service_reads_what_survived_the_round_trip(populated):
    url = populated
    await artifacts_migrations.migrate(url, "a7c1e2f40001")
    await artifacts_migrations.migrate(url)
    app = create_app(ArtifactsSettings(database_url=url, artifacts_consumer_enabled=False))
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
        runs = (await client.get("/api/runs", params={"limit": 50})).json()["runs"]
        logs = (await client.get("/api/runs/m-succeeded/logs")).json()["logs"]
    assert {run["execution_id"] for run in runs} == {*RUNS, "my_dag__2026-11-28"}
    assert [line["message"] for line in logs] == [f"line {i}" for i in range(5)]


def ibflow(url: str, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "IBFLOW_STACK_FILE"))}
    env |= {"DATABASE_URL": url, "IBFLOW_STACK_FILE": os.devnull}
    return subprocess.run([sys.executable, "-m", "ibflow.cli", "migrate", *argv], env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_the_command_line_moves_each_service_and_says_where_it_is(new_database):
    url = new_database("migrate_cli")
    assert ibflow(url, "--status").returncode == 1  # nothing applied yet
    assert ibflow(url).returncode == 0
    status = ibflow(url, "--status")
    assert status.returncode == 0, status.stderr
    assert "artifacts: at head a7c1e2f4" in status.stdout and "scheduler: at head sched_" in status.stdout

    # A revision names its service; a downgrade needs --yes without a terminal.
    refused = ibflow(url, "--to", "a7c1e2f40003")
    assert refused.returncode == 1
    assert "downgrade" in refused.stdout and "--yes" in refused.stderr
    down = ibflow(url, "--to", "a7c1e2f40003", "--yes")
    assert down.returncode == 0, down.stderr
    assert "artifacts: at a7c1e2f40003" in down.stdout and "scheduler" not in down.stdout
    status = ibflow(url, "--status", "--service", "artifacts")
    assert status.returncode == 1
    assert "artifacts: at a7c1e2f40003, head" in status.stdout
    assert any(line.split()[:3] == ["artifacts", "a7c1e2f40003", "current"] for line in status.stdout.splitlines())

    assert ibflow(url, "--to", "-1", "--service", "scheduler", "--yes").returncode == 0
    unknown = ibflow(url, "--to", "nosuchrev")
    assert unknown.returncode == 1 and "no service's history has a revision 'nosuchrev'" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    back = ibflow(url, "--to", "head")
    assert back.returncode == 0, back.stderr
    assert "artifacts: upgrade a7c1e2f40003 ->" in back.stdout
    assert ibflow(url, "--status").returncode == 0
