"""Rows stored before any event bound existed (written here straight into the tables,
as an old version or a hand-written INSERT would have) are served by the artifacts API
and shown by every gateway page and fragment: 300- and 5,000-deep JSON, a 5,000-digit
number, a log message of 4,990 `[` then 4,990 `]`, odd but storable unicode."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from services.artifacts.database import new_engine
from services.artifacts.main import create_app as artifacts_app
from services.artifacts.migrate import migrate
from services.artifacts.settings import ArtifactsSettings
from services.gateway.main import create_app as gateway_app
from services.gateway.settings import GatewaySettings
from shared.bounded_json import MAX_DEPTH, TRUNCATED
from shared.database import normalize_database_url
from shared.http import serving

pytestmark = pytest.mark.integration

RUN = "odd-run"
WF = "odd_workflow"
T0 = datetime.now(UTC) - timedelta(hours=1)
HUGE = "7" * 5000
BRACKETS = "[" * 4990 + "]" * 4990
# Storable in PostgreSQL (no NUL, no lone surrogate), yet odd: direction overrides,
# zero-width joiners, combining marks, line separators, astral emoji, a BOM.
ODD = "\u202egnp.exe\u202c \u200d\U0001f468\u200d\U0001f4bb e\u0301\u0301\u0301 \u2028\u2029 \ufeff \U0010fffd <b>&amp;"


def nested_arrays(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"k": ' * depth + '"leaf"' + "}" * depth


def depth_of(value) -> int:
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def holds(value, wanted) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if node == wanted:
            return True
        if isinstance(node, (dict, list)):
            stack.extend(node.values() if isinstance(node, dict) else node)
    return False


ARTIFACTS = {
    # name: (media_type, metadata JSON text, payload JSON text)
    "meta-300": ("application/json", '{"deep": ' + nested_objects(300) + "}", '{"ok": true}'),
    "meta-5000": ("application/json", '{"deep": ' + nested_arrays(5000) + "}", nested_objects(5000)),
    "huge-number": ("application/json", '{"n": ' + HUGE + "}", '{"n": -' + HUGE + ', "f": 1e400}'),
    "odd-unicode": ("application/json", json.dumps({ODD: ODD}), json.dumps([ODD, {"k": ODD}])),
    "odd-text": ("text/markdown", json.dumps({"renderer": "markdown"}), json.dumps(f"# {ODD}\n\n<script>x</script>")),
    "deep-table": ("application/json", json.dumps({"renderer": "table"}),
                   '{"columns": ["a"], "rows": [[' + nested_arrays(3000) + "]]}"),
}
LOGS = [
    ("INFO", BRACKETS, "{}"),
    ("INFO", "deep fields", '{"deep": ' + nested_objects(300) + "}"),
    ("WARNING", "deeper fields", '{"deep": ' + nested_arrays(5000) + "}"),
    ("ERROR", "huge number", '{"n": ' + HUGE + "}"),
    ("INFO", ODD, json.dumps({ODD: ODD, "json": '{"a": ' + nested_arrays(2000) + "}"})),
    ("INFO", '{"message": "serialised twice", "inner": ' + nested_arrays(400) + "}", "{}"),
]


async def store_odd_rows(database_url: str) -> dict[str, str]:
    engine = new_engine(normalize_database_url(database_url))
    ids: dict[str, str] = {}
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO runs (execution_id, workflow_id, status, trigger, params, opened_at, requested_at,"
                     " started_at, finished_at, artifact_count, log_count)"
                     " VALUES (:id, :wf, 'succeeded', 'manual', CAST(:params AS jsonb), :t, :t, :t, :t, :a, :l)"),
                {"id": RUN, "wf": WF, "params": '{"symbols": ["AAPL"], "deep": ' + nested_arrays(5000)
                 + ', "n": ' + HUGE + "}", "t": T0, "a": len(ARTIFACTS), "l": len(LOGS)},
            )
            await conn.execute(
                text("INSERT INTO run_steps (execution_id, step_name, position, status, attempt, started_at,"
                     " finished_at) VALUES (:id, :step, 0, 'succeeded', 1, :t, :t)"),
                {"id": RUN, "step": ODD, "t": T0},
            )
            for i, (name, (media_type, metadata, payload)) in enumerate(ARTIFACTS.items()):
                ids[name] = str(uuid.uuid4())
                await conn.execute(
                    text("INSERT INTO artifacts (artifact_id, event_id, name, kind, media_type, workflow_id,"
                         " execution_id, step_name, created_at, metadata, payload)"
                         " VALUES (:aid, :eid, :name, 'model', :media, :wf, :run, :step, :t,"
                         " CAST(:metadata AS jsonb), CAST(:payload AS jsonb))"),
                    {"aid": ids[name], "eid": str(uuid.uuid4()), "name": name, "media": media_type, "wf": WF,
                     "run": RUN, "step": ODD, "t": T0 + timedelta(seconds=i), "metadata": metadata, "payload": payload},
                )
            for i, (level, message, fields) in enumerate(LOGS):
                await conn.execute(
                    text("INSERT INTO log_records (event_id, workflow_id, execution_id, step_name, occurred_at, level,"
                         " level_no, message, logger, fields)"
                         " VALUES (:eid, :wf, :run, :step, :t, :level, 20, :message, :logger, CAST(:fields AS jsonb))"),
                    {"eid": str(uuid.uuid4()), "wf": WF, "run": RUN, "step": ODD, "t": T0 + timedelta(seconds=i),
                     "level": level, "message": message, "logger": ODD[:50], "fields": fields},
                )
    finally:
        await engine.dispose()
    return ids


class Stack:
    def __init__(self, api: httpx.AsyncClient, gateway: httpx.AsyncClient, ids: dict[str, str]):
        self.api, self.gateway, self.ids = api, gateway, ids


@pytest.fixture(scope="module")
async def stack(new_database) -> AsyncIterator[Stack]:
    url = new_database()
    await migrate(url)
    ids = await store_odd_rows(url)
    settings = ArtifactsSettings(database_url=url, artifacts_consumer_enabled=False,
                                 artifacts_log_stream_poll_seconds=0.1, artifacts_log_stream_grace_seconds=0.2)
    async with serving(artifacts_app(settings)) as api_url, httpx.AsyncClient(base_url=api_url, timeout=60) as api:
        gateway = gateway_app(GatewaySettings(artifacts_url=api_url, scheduler_url="http://127.0.0.1:9",
                                              signals_url="http://127.0.0.1:9"))
        async with gateway.router.lifespan_context(gateway), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway), base_url="http://gateway", timeout=60
        ) as client:
            yield Stack(api, client, ids)


# --- the artifacts API ---------------------------------------------------------------------


async def test_the_artifact_list_and_its_groups_answer(stack):
    listing = await stack.api.get("/api/artifacts/", params={"limit": 500})
    assert listing.status_code == 200, listing.text
    by_name = {a["name"]: a for a in listing.json()["artifacts"]}
    assert set(by_name) == set(ARTIFACTS)
    for name in ("meta-300", "meta-5000"):
        metadata = by_name[name]["metadata"]
        assert depth_of(metadata) == MAX_DEPTH and holds(metadata, TRUNCATED)
    assert by_name["huge-number"]["metadata"] == {"n": HUGE}
    assert by_name["odd-unicode"]["metadata"] == {ODD: ODD}
    grouped = await stack.api.get("/api/artifacts/by-execution")
    assert grouped.status_code == 200 and grouped.json()["executions"][0]["artifact_count"] == len(ARTIFACTS)


@pytest.mark.parametrize("name", list(ARTIFACTS))
async def test_each_artifact_and_its_content_answer(stack, name):
    detail = await stack.api.get(f"/api/artifacts/{stack.ids[name]}")
    assert detail.status_code == 200, detail.text
    assert depth_of(detail.json()["payload"]) <= MAX_DEPTH and depth_of(detail.json()["metadata"]) <= MAX_DEPTH
    content = await stack.api.get(f"/api/artifacts/{stack.ids[name]}/content")
    assert content.status_code == 200, content.text
    if name == "odd-text":
        assert content.text.startswith(f"# {ODD}")
    else:
        assert json.loads(content.text) == detail.json()["payload"]
    if name == "huge-number":
        # PostgreSQL keeps 1e400 as the numeric it is, written out in full.
        assert detail.json()["payload"] == {"n": "-" + HUGE, "f": "1" + "0" * 400}


async def test_the_run_and_its_logs_answer(stack):
    run = await stack.api.get(f"/api/runs/{RUN}")
    assert run.status_code == 200, run.text
    assert run.json()["params"]["n"] == HUGE and depth_of(run.json()["params"]) == MAX_DEPTH
    assert run.json()["steps"][0]["step_name"] == ODD
    assert (await stack.api.get("/api/runs")).status_code == 200
    logs = await stack.api.get(f"/api/runs/{RUN}/logs")
    assert logs.status_code == 200, logs.text
    records = logs.json()["logs"]
    assert [r["message"] for r in records][0] == BRACKETS  # stored text is served as it is
    assert all(depth_of(r["fields"]) <= MAX_DEPTH for r in records)
    assert records[3]["fields"] == {"n": HUGE}


async def test_the_log_stream_sends_every_record_then_ends(stack):
    async with stack.api.stream("GET", f"/api/runs/{RUN}/logs/stream", params={"after": 0}) as response:
        assert response.status_code == 200
        body = (await response.aread()).decode()
    assert body.count("\ndata: ") == len(LOGS) + 1 and "event: end" in body


# --- the gateway's pages and fragments on the real API -------------------------------------


@pytest.mark.parametrize("path", [
    "/artifacts", "/artifacts?view=executions", f"/ui/artifacts?execution_id={RUN}", "/runs", "/ui/runs",
    f"/runs/{RUN}", f"/ui/runs/{RUN}/summary", f"/ui/runs/{RUN}/log-lines",
])
async def test_every_page_and_fragment_answers(stack, path):
    page = await stack.gateway.get(path)
    assert page.status_code == 200, page.text[:2000]
    assert "<script>x" not in page.text


@pytest.mark.parametrize("name", list(ARTIFACTS))
async def test_every_artifact_page_answers(stack, name):
    page = await stack.gateway.get(f"/artifacts/{stack.ids[name]}")
    assert page.status_code == 200, page.text[:2000]
    assert "<script>x" not in page.text


async def test_the_bracket_message_is_shown_as_text_on_the_run_page(stack):
    lines = await stack.gateway.get(f"/ui/runs/{RUN}/log-lines")
    assert BRACKETS in lines.text
    page = await stack.gateway.get(f"/runs/{RUN}")
    assert BRACKETS in page.text and f'<span class="jt-str">{TRUNCATED}</span>' in page.text


async def test_the_live_stream_renders_every_record(stack):
    async with stack.gateway.stream("GET", f"/ui/runs/{RUN}/log-stream") as response:
        body = (await response.aread()).decode()
    assert body.count("event: line") == len(LOGS) and "event: end" in body
    assert BRACKETS in body
