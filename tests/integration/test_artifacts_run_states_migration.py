"""The migrations to partial / external runs and skipped / external steps, up and down,
on rows that exist."""

import pytest
from alembic import command
from sqlalchemy import text

from services.artifacts.database import migrations_config, new_engine
from shared.database import normalize_database_url

pytestmark = pytest.mark.integration
BEFORE = "a7c1e2f40001"
AFTER = "a7c1e2f40003"


async def alembic(url: str, action: str, revision: str) -> None:
    url = normalize_database_url(url)
    config = migrations_config(url)
    engine = new_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:

            def run(sync_connection) -> None:
                config.attributes["connection"] = sync_connection
                getattr(command, action)(config, revision)

            await connection.run_sync(run)
    finally:
        await engine.dispose()


async def sql(url: str, *statements: str):
    """Runs the statements in one transaction; the last one's rows."""
    engine = new_engine(normalize_database_url(url), pool_size=1)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                result = await connection.execute(text(statement))
            return result.all() if result.returns_rows else None
    finally:
        await engine.dispose()


async def test_an_outside_run_becomes_external_and_the_downgrade_keeps_every_row(new_database):
    url = new_database()
    await alembic(url, "upgrade", BEFORE)
    await sql(url, """
        INSERT INTO runs (execution_id, workflow_id, status, opened_at, requested_at, started_at)
        VALUES ('my_dag__2026-11-28', 'my_dag', 'running', '2026-11-28 10:00+00', NULL, NULL),
               ('manual-1', 'wf', 'running', '2026-11-28 09:00+00', '2026-11-28 09:00+00', '2026-11-28 09:00:01+00')
    """, """
        INSERT INTO artifacts (artifact_id, event_id, name, kind, media_type, workflow_id, execution_id,
                               created_at, payload)
        VALUES (gen_random_uuid(), gen_random_uuid(), 'validation metrics', 'metrics', 'application/json',
                'my_dag', 'my_dag__2026-11-28', '2026-11-28 10:05+00', '{"auc": 0.71}')
    """, """
        INSERT INTO run_steps (execution_id, step_name, position, status, attempt)
        VALUES ('my_dag__2026-11-28', 'train', 0, 'running', 0), ('manual-1', 'fetch', 0, 'running', 1)
    """)

    await alembic(url, "upgrade", AFTER)
    rows = await sql(url, "SELECT execution_id, status, last_event_at::text, failed_items::text FROM runs ORDER BY 1")
    assert rows == [
        ("manual-1", "running", "2026-11-28 09:00:01+00", "[]"),
        ("my_dag__2026-11-28", "external", "2026-11-28 10:05:00+00", "[]"),
    ]
    assert await sql(url, "SELECT execution_id, status FROM run_steps ORDER BY 1") == [
        ("manual-1", "running"), ("my_dag__2026-11-28", "external")
    ]

    await sql(url, """
        UPDATE runs SET status = 'partial', failed_items = '[{"item": "TSLA", "step": "fetch_market_data",
            "reason": "no security definition (code 200)", "code": 200}]' WHERE execution_id = 'manual-1'
    """, """
        INSERT INTO run_steps (execution_id, step_name, position, status, skipped_reason)
        VALUES ('manual-1', 'publish_signals', 3, 'skipped', 'step generate_signals failed');
    """)
    await alembic(url, "downgrade", BEFORE)
    assert await sql(url, "SELECT execution_id, status, error FROM runs ORDER BY 1") == [
        ("manual-1", "failed", "finished with failed items"),
        ("my_dag__2026-11-28", "running", None),
    ]
    assert await sql(url, "SELECT step_name, status FROM run_steps ORDER BY 1") == [
        ("fetch", "running"), ("publish_signals", "pending"), ("train", "running")
    ]
    await alembic(url, "upgrade", AFTER)
