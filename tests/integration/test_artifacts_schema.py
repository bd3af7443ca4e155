"""The artifacts service's schema: migrations, the old index names, the refusal to serve a
database that is not at head, and /health naming the database it really uses."""

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

from services.artifacts.database import VERSION_TABLE
from services.artifacts.db.models import Base
from services.artifacts.main import create_app
from services.artifacts.migrate import migrate
from services.artifacts.settings import ArtifactsSettings
from shared.database import SchemaMismatchError, normalize_database_url
from shared.startup import running

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
OLD_INDEXES = {
    "idx_artifacts_workflow_id",
    "idx_artifacts_execution_id",
    "idx_artifacts_workflow_execution",
    "idx_artifacts_dag_id",
    "idx_artifacts_step_name",
}


def settings_for(database_url: str, **extra) -> ArtifactsSettings:
    return ArtifactsSettings(database_url=database_url, artifacts_consumer_enabled=False, **extra)


async def sql(database_url: str, statement: str, **params):
    engine = create_async_engine(normalize_database_url(database_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
async def migrated(new_database) -> tuple[str, str]:
    url = new_database()
    return url, await migrate(url)


async def test_migrate_reaches_head_and_a_second_run_changes_nothing(migrated):
    url, head = migrated
    assert head
    assert await migrate(url) == head
    assert await sql(url, f"SELECT version_num FROM {VERSION_TABLE}") == [(head,)]


async def test_pg_indexes_has_the_five_old_index_names_on_artifacts(migrated):
    url, _ = migrated
    rows = await sql(url, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'artifacts'")
    definitions = dict(rows)
    assert OLD_INDEXES <= definitions.keys()
    assert "(workflow_id, execution_id)" in definitions["idx_artifacts_workflow_execution"]


async def test_the_tables_have_the_old_artifact_columns(migrated):
    url, _ = migrated
    columns = {
        name
        for (name,) in await sql(
            url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'artifacts'"
        )
    }
    assert {"workflow_id", "execution_id", "step_name", "dag_id", "task_id"} <= columns
    tables = {name for (name,) in await sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"runs", "run_steps", "run_events", "artifacts", "log_records", VERSION_TABLE} <= tables


async def test_the_models_match_what_the_migrations_built(migrated):
    url, _ = migrated
    engine = create_async_engine(normalize_database_url(url))
    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(
                lambda sync_conn: compare_metadata(
                    MigrationContext.configure(sync_conn, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()
    # Only our own tables: the version table is Alembic's.
    differences = [d for d in differences if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)]
    assert differences == []


async def test_an_empty_database_is_refused_naming_both_revisions(new_database, migrated):
    _, head = migrated
    app = create_app(settings_for(new_database()))
    with pytest.raises(SchemaMismatchError) as refused:
        async with running(app):
            pass
    assert "<none>" in str(refused.value)
    assert head in str(refused.value)


async def test_a_database_at_another_revision_is_refused_naming_both(new_database, migrated):
    _, head = migrated
    url = new_database()
    await migrate(url)
    await sql(url, f"UPDATE {VERSION_TABLE} SET version_num = '0000deadbeef'")
    app = create_app(settings_for(url))
    with pytest.raises(SchemaMismatchError) as refused:
        async with running(app):
            pass
    assert "0000deadbeef" in str(refused.value)
    assert head in str(refused.value)


async def test_the_server_process_exits_non_zero_with_the_message(new_database, migrated):
    _, head = migrated
    env = os.environ | {"DATABASE_URL": new_database(), "ARTIFACTS_CONSUMER_ENABLED": "false"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "services.artifacts.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 3  # what uvicorn answers a failed start-up with
    text_out = output.decode()
    assert "artifacts cannot start" in text_out
    assert f"database schema is at revision <none> but this code needs {head}" in text_out


async def test_health_names_the_database_masks_the_password_and_survives_its_loss(new_database):
    url = make_url(new_database())
    if url.password is None:
        url = url.set(password="s3cret-pw")  # the test server trusts local connections
    url_text = url.render_as_string(hide_password=False)
    head = await migrate(url_text)
    app = create_app(settings_for(url_text, artifacts_db_timeout_seconds=3.0))
    async with running(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://artifacts")
        async with client:
            healthy = await client.get("/health")
            assert healthy.status_code == 200, healthy.text
            database = healthy.json()["components"]["database"]
            assert database["status"] == "ok"
            assert database["detail"]["host"] == url.host
            assert database["detail"]["port"] == url.port
            assert database["detail"]["database"] == url.database
            assert database["detail"]["revision"] == database["detail"]["head"] == head
            assert url.password not in healthy.text
            assert "***" in database["detail"]["url"]

            # The database goes away under the running service: no new connections, and
            # the open ones cut.
            maintenance = url.set(database="postgres").render_as_string(hide_password=False)
            await sql(maintenance, f'ALTER DATABASE "{url.database}" WITH ALLOW_CONNECTIONS false')
            await sql(
                maintenance,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name",
                name=url.database,
            )
            gone = await asyncio.wait_for(client.get("/health"), timeout=30)
            assert gone.status_code == 503
            report = gone.json()
            assert report["status"] == "unhealthy"
            assert report["components"]["database"]["status"] == "unhealthy"
            assert report["components"]["database"]["error"].startswith("database unreachable")
            assert report["components"]["database"]["detail"]["database"] == url.database
