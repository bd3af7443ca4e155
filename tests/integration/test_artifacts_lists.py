"""Lists at scale, for correctness (the speed is `make bench`'s): capped totals, cursors
that walk every filter's list without repeats or gaps, the 0004 migration up and down,
and log text search through the trigram index giving what a plain scan gives.

The store is the seed generator's (a few hundred artifacts and runs, a run of a few
thousand log lines) plus rows that share an instant, served over real HTTP with a small
total cap so that both sides of the cap are reached."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from alembic import command

from services.artifacts.database import migrations_config, new_engine, new_sessionmaker
from services.artifacts.db.models import Artifact
from services.artifacts.main import create_app
from services.artifacts.migrate import migrate
from services.artifacts.queries.totals import Total, capped_total
from services.artifacts.seed import asyncpg_dsn, seed_artifacts, seed_log_run
from services.artifacts.settings import ArtifactsSettings
from shared.database import normalize_database_url
from shared.http import serving

pytestmark = pytest.mark.integration

CAP = 40
PAGE = 9
NOW = datetime.now(UTC).replace(microsecond=0)
TIE = NOW - timedelta(days=3)
MONTH_AGO = NOW - timedelta(days=30)
YEAR_AGO = NOW - timedelta(days=365)
BEFORE = "a7c1e2f40003"
THIS = "a7c1e2f40004"  # the migration of the list indexes
LIST_INDEXES = {
    "idx_artifacts_workflow_created", "idx_artifacts_workflow_step_created", "idx_artifacts_workflow_kind_created",
    "idx_artifacts_step_created", "idx_artifacts_kind_created", "idx_artifacts_dag_created",
    "idx_artifacts_dag_task_created", "idx_artifacts_task_created", "idx_runs_status_opened",
    "idx_runs_trigger_opened", "idx_log_records_message_trgm",
}
OLD_INDEXES = {
    "idx_artifacts_workflow_id", "idx_artifacts_execution_id", "idx_artifacts_workflow_execution",
    "idx_artifacts_dag_id", "idx_artifacts_step_name",
}


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@dataclass
class Store:
    url: str
    client: httpx.AsyncClient
    execution_id: str  # a run of the seeded store with several artifacts
    log_run: str  # the run with the log lines


async def sql(url: str, statement: str, *args, settings: tuple[str, ...] = ()) -> list:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        async with conn.transaction():
            for setting in settings:
                await conn.execute(setting)
            return await conn.fetch(statement, *args)
    finally:
        await conn.close()


async def add_ties(url: str) -> None:
    """Rows that share their list's instant: only the id orders them, and a cursor that
    kept the instant alone would skip or repeat them."""
    await sql(url, """
        INSERT INTO runs (execution_id, workflow_id, status, trigger, opened_at, last_event_at, artifact_count)
        SELECT 'tie-run-' || n, 'ties', 'succeeded', 'manual', $1, $1, 3 FROM generate_series(1, 12) n
    """, TIE)
    await sql(url, """
        INSERT INTO artifacts (artifact_id, event_id, name, kind, media_type, workflow_id, execution_id, step_name,
                               dag_id, task_id, created_at)
        SELECT gen_random_uuid(), gen_random_uuid(), 'tie ' || n, 'chart', 'image/png', 'ties',
               'tie-run-' || (n % 12 + 1), 'draw', 'ties_dag', 'draw', $1
        FROM generate_series(1, 30) n
    """, TIE)


SPECIAL_LINES = (
    "fill 50%_done at 3\\4 o'clock",
    "fill 50 percent done",
    "ÉCHEC de l'ordre AAPL",
    "échec retried",
    "under_score and 100% sure",
)


async def add_special_lines(url: str, execution_id: str) -> None:
    await sql(url, """
        INSERT INTO log_records (event_id, workflow_id, execution_id, step_name, occurred_at, level, level_no, message)
        SELECT gen_random_uuid(), 'ibkr_trading_signal_workflow', $1::text, 'publish_signals',
               (SELECT min(occurred_at) FROM log_records WHERE execution_id = $1::text) + n * interval '1 second',
               'INFO', 20, ($2::text[])[n]
        FROM generate_series(1, array_length($2::text[], 1)) n
    """, execution_id, list(SPECIAL_LINES))
    await sql(url, "ANALYZE log_records")


@pytest.fixture(scope="module")
async def store(new_database) -> AsyncIterator[Store]:
    url = new_database()
    await migrate(url)
    await seed_artifacts(url, 500, seed=11, end=NOW)
    await add_ties(url)
    log_run, _ = await seed_log_run(url, 3000, seed=12)
    await add_special_lines(url, log_run)
    (execution_id,) = (await sql(url, "SELECT execution_id FROM runs WHERE artifact_count >= 5 "
                                      "AND execution_id NOT LIKE 'tie-%' ORDER BY opened_at DESC LIMIT 1"))[0]
    settings = ArtifactsSettings(
        database_url=url, artifacts_consumer_enabled=False, artifacts_list_total_cap=CAP, log_level="WARNING"
    )
    async with serving(create_app(settings)) as base_url, httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        yield Store(url, client, execution_id, log_run)


# --- what each filter should list, by plain SQL ---------------------------------------

ARTIFACT_COLUMNS = {"workflow_id", "execution_id", "step_name", "kind", "dag_id", "task_id"}


def artifact_filters(execution_id: str) -> dict[str, dict[str, str]]:
    return {
        "no filter": {},
        "workflow_id": {"workflow_id": "momentum_daily"},
        "execution_id": {"execution_id": execution_id},
        "step_name": {"step_name": "generate_signals"},
        "kind": {"kind": "signals"},
        "kind, rare": {"kind": "notebook"},
        "dag_id": {"dag_id": "airflow_risk_model"},
        "task_id": {"task_id": "train"},
        "dag_id + task_id": {"dag_id": "airflow_risk_model", "task_id": "train"},
        "created_after": {"created_after": iso(MONTH_AGO)},
        "created_after + created_before": {"created_after": iso(YEAR_AGO), "created_before": iso(MONTH_AGO)},
        "workflow_id + step_name": {"workflow_id": "ibkr_trading_signal_workflow", "step_name": "generate_signals"},
        "workflow_id + kind": {"workflow_id": "ibkr_trading_signal_workflow", "kind": "signals"},
        "kind + created_after": {"kind": "signals", "created_after": iso(YEAR_AGO)},
        "step_name + kind": {"step_name": "generate_signals", "kind": "model"},
        "ties": {"workflow_id": "ties"},
        "ties, dag_id + task_id": {"dag_id": "ties_dag", "task_id": "draw"},
        "nothing matches": {"workflow_id": "no_such_workflow"},
    }


def where(params: dict[str, str], columns: set[str], time_column: str, after: str, before: str):
    clauses, args = ["true"], []
    for name, value in params.items():
        args.append(datetime.fromisoformat(value) if name in (after, before) else value)
        if name in columns:
            clauses.append(f"{name} = ${len(args)}")
        else:
            clauses.append(f"{time_column} {'>=' if name == after else '<'} ${len(args)}")
    return " AND ".join(clauses), args


async def expected_artifacts(url: str, params: dict[str, str]) -> list[str]:
    clause, args = where(params, ARTIFACT_COLUMNS, "created_at", "created_after", "created_before")
    rows = await sql(
        url, f"SELECT artifact_id FROM artifacts WHERE {clause} ORDER BY created_at DESC, artifact_id DESC", *args
    )
    return [str(row[0]) for row in rows]


RUN_FILTERS = {
    "no filter": {},
    "workflow_id": {"workflow_id": "momentum_daily"},
    "status=succeeded": {"status": "succeeded"},
    "status=failed": {"status": "failed"},
    "status=partial": {"status": "partial"},
    "status=external": {"status": "external"},
    "status=running": {"status": "running"},
    "status=abandoned": {"status": "abandoned"},
    "trigger": {"trigger": "manual"},
    "started_after": {"started_after": iso(YEAR_AGO)},
    "started_after + started_before": {"started_after": iso(YEAR_AGO), "started_before": iso(MONTH_AGO)},
    "workflow_id + status": {"workflow_id": "ibkr_trading_signal_workflow", "status": "failed"},
    "ties": {"workflow_id": "ties"},
}
ABANDONED_AFTER = "now() - interval '6 hours'"


async def expected_runs(url: str, params: dict[str, str]) -> list[str]:
    params = dict(params)
    status = params.pop("status", None)
    clause, args = where(params, {"workflow_id", "trigger"}, "opened_at", "started_after", "started_before")
    last_event = "coalesce(last_event_at, opened_at)"
    if status == "abandoned":
        clause += f" AND status IN ('queued', 'running') AND {last_event} < {ABANDONED_AFTER}"
    elif status in ("queued", "running"):
        clause += f" AND status = '{status}' AND {last_event} >= {ABANDONED_AFTER}"
    elif status:
        clause += f" AND status = '{status}'"
    rows = await sql(url, f"SELECT execution_id FROM runs WHERE {clause} ORDER BY opened_at DESC, execution_id DESC",
                     *args)
    return [row[0] for row in rows]


async def walk(client: httpx.AsyncClient, path: str, params: dict[str, str], key: str, id_key: str) -> tuple:
    """Every page of a list by its cursors: the ids in order, and each page's total."""
    ids, totals, cursor = [], set(), None
    while True:
        response = await client.get(path, params={**params, "limit": PAGE, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [item[id_key] for item in body[key]]
        totals.add((body["total"], body["total_is_exact"]))
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, totals
        assert len(body[key]) == PAGE
        assert len(ids) < 10_000, "the cursors do not end"


def capped(count: int) -> tuple[int, bool]:
    return (count, True) if count <= CAP else (CAP, False)


# --- tests --------------------------------------------------------------------------


async def test_every_artifact_filter_pages_through_every_match_once_in_order(store):
    seen_both_sides = set()
    for name, params in artifact_filters(store.execution_id).items():
        expected = await expected_artifacts(store.url, params)
        ids, totals = await walk(store.client, "/api/artifacts/", params, "artifacts", "artifact_id")
        assert ids == expected, name
        assert totals == {capped(len(expected))}, name
        seen_both_sides.add(len(expected) > CAP)
    assert seen_both_sides == {True, False}, "the filters should reach both sides of the cap"


async def test_every_run_filter_pages_through_every_match_once_in_order(store):
    seen_both_sides = set()
    for name, params in RUN_FILTERS.items():
        expected = await expected_runs(store.url, params)
        ids, totals = await walk(store.client, "/api/runs", params, "runs", "execution_id")
        assert ids == expected, name
        assert totals == {capped(len(expected))}, name
        seen_both_sides.add(len(expected) > CAP)
    assert seen_both_sides == {True, False}


async def test_an_empty_answer_is_exact(store):
    body = (await store.client.get("/api/artifacts/", params={"workflow_id": "no_such_workflow"})).json()
    assert body == {"artifacts": [], "total": 0, "total_is_exact": True, "limit": 50, "next_cursor": None}
    body = (await store.client.get("/api/runs", params={"workflow_id": "no_such_workflow"})).json()
    assert body == {"runs": [], "total": 0, "total_is_exact": True, "limit": 50, "next_cursor": None}


async def test_the_total_is_exact_up_to_the_cap_and_a_lower_bound_past_it(store):
    engine = new_engine(normalize_database_url(store.url))
    conditions = [Artifact.workflow_id == "ties"]
    try:
        async with new_sessionmaker(engine)() as session:
            assert await capped_total(session, Artifact, conditions, 31) == Total(30, exact=True)
            assert await capped_total(session, Artifact, conditions, 30) == Total(30, exact=True)
            assert await capped_total(session, Artifact, conditions, 29) == Total(29, exact=False)
            assert await capped_total(session, Artifact, conditions, 1) == Total(1, exact=False)
    finally:
        await engine.dispose()


async def test_the_openapi_document_says_what_total_is(store):
    schemas = (await store.client.get("/openapi.json")).json()["components"]["schemas"]
    for page in ("ArtifactPage", "RunPage"):
        properties = schemas[page]["properties"]
        assert "lower bound" in properties["total"]["description"]
        assert properties["total_is_exact"]["type"] == "boolean"
        assert "total_is_exact" in schemas[page]["required"]


# --- log text search ------------------------------------------------------------------


def like_pattern(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


SEARCHES = ("nvda", "heartbeat", "error 354", "bars for AAPL from cache", "50%_done", "3\\4", "o'clock", "%", "_",
            "100% sure", "échec", "no such text")


async def test_log_search_finds_what_a_plain_scan_finds(store):
    ticket = (await sql(store.url, "SELECT substring(message from 'T[0-9]+') FROM log_records "
                                   "WHERE execution_id = $1 AND message LIKE 'order ticket %' LIMIT 1",
                        store.log_run))[0][0]
    rows = await sql(store.url, "SELECT id, message FROM log_records WHERE execution_id = $1 ORDER BY occurred_at, id",
                     store.log_run)
    for text in (ticket, *SEARCHES):
        # PostgreSQL reading every line of the run, no index at all
        plain = await sql(
            store.url,
            "SELECT id FROM log_records WHERE execution_id = $1 AND message ILIKE $2 ORDER BY occurred_at, id",
            store.log_run, like_pattern(text),
            settings=("SET LOCAL enable_indexscan = off", "SET LOCAL enable_bitmapscan = off"),
        )
        expected = [row[0] for row in plain]
        if text.isascii():
            assert expected == [id_ for id_, message in rows if text.lower() in message.lower()], text
        ids, cursor = [], None
        while True:
            params = {"q": text, "limit": 50, **({"cursor": cursor} if cursor else {})}
            body = (await store.client.get(f"/api/runs/{store.log_run}/logs", params=params)).json()
            ids += [record["id"] for record in body["logs"]]
            if (cursor := body["next_cursor"]) is None:
                break
        assert ids == expected, text
    assert len(await sql(store.url, "SELECT 1 FROM log_records WHERE message ILIKE '%échec%'")) == 2


async def test_a_search_for_a_rare_text_reads_the_trigram_index(store):
    plan = await sql(store.url, "EXPLAIN SELECT * FROM log_records WHERE execution_id = $1 "
                                "AND message ILIKE '%T000001234%' ORDER BY occurred_at, id LIMIT 201", store.log_run)
    assert "idx_log_records_message_trgm" in "\n".join(row[0] for row in plan)


# --- the migration ---------------------------------------------------------------------


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


async def indexes(url: str) -> set[str]:
    rows = await sql(url, "SELECT indexname FROM pg_indexes WHERE tablename IN ('artifacts', 'runs', 'log_records')")
    return {row[0] for row in rows}


async def test_the_migration_adds_the_list_indexes_and_takes_them_away_again(new_database):
    url = new_database()
    await alembic(url, "upgrade", BEFORE)
    await seed_artifacts(url, 50, seed=13, end=NOW)
    await seed_log_run(url, 100, seed=14)
    before = await indexes(url)
    rows_before = await sql(url, "SELECT (SELECT count(*) FROM artifacts), (SELECT count(*) FROM runs), "
                                 "(SELECT count(*) FROM log_records)")

    await alembic(url, "upgrade", THIS)
    after = await indexes(url)
    assert LIST_INDEXES <= after
    assert OLD_INDEXES <= after
    assert after == (before | LIST_INDEXES) - {"idx_artifacts_kind", "idx_runs_status"}
    assert await sql(url, "SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")

    await alembic(url, "downgrade", BEFORE)
    assert await indexes(url) == before
    assert await sql(url, "SELECT attstattarget FROM pg_attribute "
                          "WHERE attrelid = 'log_records'::regclass AND attname = 'message'") in ([(-1,)], [(None,)])
    assert await sql(url, "SELECT (SELECT count(*) FROM artifacts), (SELECT count(*) FROM runs), "
                          "(SELECT count(*) FROM log_records)") == rows_before
    await alembic(url, "upgrade", THIS)
    assert await indexes(url) == after
