"""Starting the scheduler: its own migrations, a refusal to serve a database that is not
at head (naming both revisions), and the default schedule seeded on first start only."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from services.scheduler.main import create_app
from services.scheduler.migrate import migrate, scheduler_alembic_config
from services.scheduler.rows import VERSION_TABLE, Base
from services.scheduler.cron import ScheduleError
from services.scheduler.settings import SchedulerSettings
from shared.database import SchemaMismatchError, head_revision, normalize_database_url
from shared.startup import running

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# the code's head, whatever migration was added last: the tests are about refusing a mismatch
HEAD = head_revision(scheduler_alembic_config(make_url("postgresql://unused@127.0.0.1/unused")))


def settings_for(database_url: str, kafka_env: dict[str, str], **extra) -> SchedulerSettings:
    return SchedulerSettings(
        database_url=database_url, **{key.lower(): value for key, value in kafka_env.items()}, **extra
    )


async def scalar(database_url: str, sql: str):
    engine = create_async_engine(normalize_database_url(database_url))
    try:
        async with engine.connect() as connection:
            return (await connection.execute(text(sql))).scalar()
    finally:
        await engine.dispose()


async def test_migrate_upgrades_to_head_in_its_own_version_table_and_can_run_again(new_database):
    url = new_database("scheduler_migrate")
    assert await migrate(url) == HEAD
    assert await migrate(url) == HEAD
    assert await scalar(url, f"SELECT version_num FROM {VERSION_TABLE}") == HEAD
    assert await scalar(url, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'alembic_version'") == 0
    tables = await scalar(
        url,
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables "
        "WHERE table_schema = 'public'",
    )
    assert tables.split(",") == [VERSION_TABLE, "backfill_runs", "backfills", "schedule_ledger", "schedule_slots",
                                 "scheduler_retention_ledger", "schedules", "tracked_runs"]


async def test_the_backfill_migration_goes_down_and_up_again(new_database):
    url = new_database("scheduler_downgrade")
    head = await migrate(url)
    engine = create_async_engine(normalize_database_url(url))
    try:
        async with engine.begin() as connection:
            await connection.execute(text(
                "INSERT INTO tracked_runs VALUES ('backfill-wf-20120601', 'wf', 'partial', now())"))
            await connection.run_sync(lambda sync: _downgrade(sync, url, "sched_0001"))
            assert (await connection.execute(text("SELECT status FROM tracked_runs"))).scalar() == "succeeded"
    finally:
        await engine.dispose()
    assert await scalar(url, "SELECT to_regclass('backfills') IS NULL")
    assert await migrate(url) == head


def _downgrade(connection, url: str, revision: str) -> None:
    from alembic import command

    from services.scheduler.migrate import scheduler_alembic_config

    config = scheduler_alembic_config(normalize_database_url(url))
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


async def test_the_tables_match_the_models(new_database):
    url = new_database("scheduler_models")
    await migrate(url)
    engine = create_async_engine(normalize_database_url(url))
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"version_table": VERSION_TABLE}), Base.metadata
                )
            )
    finally:
        await engine.dispose()
    assert differences == []


async def test_migrate_leaves_another_service_s_tables_alone(new_database):
    url = new_database("scheduler_shared_db")
    engine = create_async_engine(normalize_database_url(url))
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE alembic_version_artifacts (version_num varchar(32) PRIMARY KEY)"))
            await connection.execute(text("INSERT INTO alembic_version_artifacts VALUES ('art_0001')"))
    finally:
        await engine.dispose()
    assert await migrate(url) == HEAD
    assert await scalar(url, "SELECT version_num FROM alembic_version_artifacts") == "art_0001"


async def test_the_service_refuses_an_empty_database(new_database, kafka_env):
    app = create_app(settings_for(new_database("scheduler_empty"), kafka_env))
    with pytest.raises(SchemaMismatchError, match=f"at revision <none> but this code needs {HEAD}"):
        async with running(app):
            pass


async def stamped(new_database, revision: str) -> str:
    url = new_database("scheduler_stamped")
    await migrate(url)
    engine = create_async_engine(normalize_database_url(url))
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = :r"), {"r": revision})
    finally:
        await engine.dispose()
    return url


async def test_the_service_refuses_a_database_at_another_revision(new_database, kafka_env):
    app = create_app(settings_for(await stamped(new_database, "sched_0000_older"), kafka_env))
    with pytest.raises(SchemaMismatchError, match=f"at revision sched_0000_older but this code needs {HEAD}"):
        async with running(app):
            pass


async def test_the_service_process_exits_with_a_message_naming_both_revisions(new_database, kafka_env, tmp_path):
    url = await stamped(new_database, "sched_9999_newer")
    env = {**os.environ, **kafka_env, "DATABASE_URL": url}
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "services.scheduler.main:create_app", "--factory",
         "--host", "127.0.0.1", "--port", "0"],
        cwd=tmp_path, env=env | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 3  # what uvicorn answers a failed start-up with
    assert f"database schema is at revision sched_9999_newer but this code needs {HEAD}" in output
    assert "scheduler cannot start" in output


async def test_health_of_an_unreachable_database_says_so_and_masks_the_password(kafka_env):
    app = create_app(settings_for("postgresql://ibflow:s3cret-pw@127.0.0.1:1/scheduler", kafka_env))
    # the start-up waits for the database as long as the lifespan lasts
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scheduler") as client:
            for _ in range(300):
                response = await client.get("/health")
                if response.json()["components"]["startup"]["detail"]["last_error"]:
                    break
                await asyncio.sleep(0.1)
            api = await client.get("/api/workflows")
    body = response.json()
    startup = body["components"]["startup"]
    assert response.status_code == 503 and body["status"] == "starting"
    assert startup["detail"]["reason"] == "database schema check at postgresql+asyncpg://ibflow:***@127.0.0.1:1/scheduler"
    assert "ConnectionRefusedError" in startup["detail"]["last_error"]
    assert "s3cret-pw" not in response.text
    # the API says why instead of waiting on a pool that cannot connect
    assert api.status_code == 503
    assert api.json()["error"].startswith("the scheduler service is starting: database schema check at")
    assert "s3cret-pw" not in api.text


async def schedule_of(app) -> dict:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scheduler") as client:
        response = await client.get("/api/workflows/ibkr_trading_signal_workflow")
    assert response.status_code == 200
    return response.json()["schedule"]


async def test_the_environment_seeds_the_schedule_on_first_start_only(new_database, kafka_env):
    url = new_database("scheduler_seed")
    await migrate(url)
    first = create_app(settings_for(url, kafka_env, workflow_schedule="15 16 * * 1-5",
                                    workflow_timezone="Europe/London", watchlist="IBM, aapl"))
    async with running(first):
        seeded = await schedule_of(first)
    assert (seeded["cron"], seeded["timezone"]) == ("15 16 * * 1-5", "Europe/London")
    assert seeded["default_params"] == {"symbols": ["IBM", "AAPL"]}

    again = create_app(settings_for(url, kafka_env, workflow_schedule="0 8 * * *", workflow_timezone="Asia/Tokyo"))
    async with running(again):
        assert await schedule_of(again) == seeded  # the database is the source of truth now


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"workflow_schedule": "0 9 * * 1-5 *"}, "expected 5 fields"),
        ({"workflow_timezone": "America/Nowhere"}, "unknown timezone 'America/Nowhere'"),
        ({"watchlist": "AAPL,not a symbol"}, "invalid params"),
    ],
)
async def test_an_unusable_seed_refuses_to_start_with_a_clear_message(new_database, kafka_env, env, message):
    url = new_database("scheduler_bad_seed")
    await migrate(url)
    app = create_app(settings_for(url, kafka_env, **env))
    with pytest.raises(ScheduleError, match=f"cannot seed the default schedule from WORKFLOW_SCHEDULE.*{message}"):
        async with running(app):
            pass
