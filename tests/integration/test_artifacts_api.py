"""The artifacts query API over real HTTP (uvicorn) on a real PostgreSQL, with data
stored through the consumer's own write path (`store_batch`)."""

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.artifacts.database import new_engine, new_sessionmaker
from services.artifacts.ingest.store import store_batch
from services.artifacts.main import create_app
from services.artifacts.migrate import migrate
from services.artifacts.settings import ArtifactsSettings
from services.signals.analytics.diff import diff_signals
from shared.api_models import SIGNALS_DIFF_KIND, SignalsDiff
from shared.artifact_store import ArtifactStore
from shared.database import normalize_database_url
from shared.events import (
    ArtifactCreated,
    LogRecorded,
    RunFailed,
    RunRequested,
    RunStarted,
    RunSucceeded,
    StepFailed,
    StepStarted,
    StepSucceeded,
)
from shared.http import serving

pytestmark = pytest.mark.integration

WF = "ibkr_trading_signal_workflow"
STEPS = ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]
T0 = datetime(2025, 3, 3, 14, 30, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def signals(*entries) -> dict:
    return {
        "signals": [
            {"symbol": s, "action": a, "strength": x, "last_price": 100.0, "reasons": ["r"]} for s, a, x in entries
        ],
        "as_of": "2025-03-03",
    }


def finished_run(execution_id: str, start: float, *, ok: bool, payload: dict | None, trigger="schedule") -> list:
    ids = {"workflow_id": WF, "execution_id": execution_id}
    events = [
        RunRequested(**ids, trigger=trigger, occurred_at=at(start)),
        RunStarted(**ids, steps=STEPS, occurred_at=at(start + 0.1)),
    ]
    for i, step in enumerate(STEPS):
        events.append(StepStarted(**ids, step_name=step, occurred_at=at(start + 0.2 + i)))
        if not ok and step == "generate_signals":
            events.append(StepFailed(**ids, step_name=step, error="model diverged", occurred_at=at(start + 0.7 + i)))
            events.append(RunFailed(**ids, error="generate_signals failed: model diverged", occurred_at=at(start + 5)))
            return events
        events.append(StepSucceeded(**ids, step_name=step, occurred_at=at(start + 0.7 + i)))
    if payload is not None:
        events.append(
            ArtifactCreated(
                **ids,
                step_name="generate_signals",
                name="signals.json",
                kind="signals",
                payload=payload,
                occurred_at=at(start + 2.8),
            )
        )
    events.append(RunSucceeded(**ids, summary={"signals": 3}, occurred_at=at(start + 5)))
    return events


LOG_LEVELS = ["DEBUG", "INFO", "INFO", "WARNING", "ERROR"]


def running_run_logs(count: int, start_minute: float = 40) -> list[LogRecorded]:
    ids = {"workflow_id": WF, "execution_id": "run-live"}
    return [
        LogRecorded(
            **ids,
            step_name=STEPS[i % 2],
            level=LOG_LEVELS[i % len(LOG_LEVELS)],
            message=f"line {i:02d}" + (" 50%_done" if i == 7 else ""),
            logger="ibflow.signals",
            fields={"i": i, "nested": {"symbols": ["AAPL", "MSFT"]}},
            occurred_at=at(start_minute + i / 60),
        )
        for i in range(count)
    ]


class Served:
    def __init__(self, client: httpx.AsyncClient, database_url: str, store: ArtifactStore, ids: dict):
        self.client = client
        self.database_url = database_url
        self.store = store
        self.ids = ids

    async def store_events(self, events) -> None:
        engine = new_engine(normalize_database_url(self.database_url))
        try:
            async with new_sessionmaker(engine)() as session, session.begin():
                await store_batch(session, events)
        finally:
            await engine.dispose()


async def serve(settings: ArtifactsSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(settings)) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
async def api(new_database, tmp_path_factory) -> AsyncIterator[Served]:
    url = new_database()
    await migrate(url)
    store_root = tmp_path_factory.mktemp("artifact-store")
    store = ArtifactStore.from_url(store_root.as_uri())
    csv_bytes = b"symbol,close\nAAPL,187.5\nMSFT,402.1\n"
    csv_blob = await store.put(csv_bytes)
    doomed_blob = await store.put(b"this content will be tampered with")
    ids: dict = {"csv_bytes": csv_bytes}

    run_old = finished_run(
        "run-old",
        0,
        ok=True,
        payload=signals(("AAPL", "BUY", 0.6), ("MSFT", "HOLD", 0.2), ("FB", "BUY", 0.4), ("IBM", "SELL", 0.5)),
        trigger="manual",
    )
    run_failed = finished_run("run-failed", 10, ok=False, payload=None)
    run_new = finished_run(
        "run-new",
        20,
        ok=True,
        payload=signals(("AAPL", "BUY", 0.9), ("MSFT", "SELL", 0.7), ("GOOG", "BUY", 0.3), ("IBM", "SELL", 0.5)),
    )
    live = {"workflow_id": WF, "execution_id": "run-live"}
    run_live = [
        RunRequested(**live, trigger="manual", occurred_at=at(39.9)),
        RunStarted(**live, steps=STEPS, occurred_at=at(40)),
        StepStarted(**live, step_name="fetch_market_data", occurred_at=at(40)),
        StepSucceeded(**live, step_name="fetch_market_data", occurred_at=at(40.5)),
        StepStarted(**live, step_name="compute_features", occurred_at=at(40.6)),
        *running_run_logs(30),
    ]
    many = {"workflow_id": WF, "execution_id": "run-many"}
    many_artifacts = [
        ArtifactCreated(
            **many,
            step_name="compute_features",
            name=f"features-{i}",
            kind="features" if i % 2 else "chart",
            payload={"i": i},
            occurred_at=at(60 + i),
        )
        for i in range(7)
    ]
    stored = ArtifactCreated(
        **many,
        step_name="fetch_market_data",
        name="bars.csv",
        kind="dataset",
        media_type="text/csv",
        uri=csv_blob.uri,
        sha256=csv_blob.sha256,
        size_bytes=csv_blob.size_bytes,
        occurred_at=at(59),
    )
    doomed = ArtifactCreated(
        **many,
        name="doomed.bin",
        kind="report",
        media_type="application/octet-stream",
        uri=doomed_blob.uri,
        sha256=doomed_blob.sha256,
        size_bytes=doomed_blob.size_bytes,
        occurred_at=at(58),
    )
    outside = ArtifactCreated(
        **many,
        name="sneaky",
        kind="report",
        media_type="text/plain",
        uri="file:///etc/passwd",
        sha256="0" * 64,
        size_bytes=10,
        occurred_at=at(57),
    )
    airflow = ArtifactCreated(
        workflow_id="legacy_airflow",
        execution_id="manual__2025-03-03T10:00:00+00:00",
        step_name="train",
        name="model-card",
        kind="model",
        payload={"auc": 0.61},
        dag_id="legacy_dag",
        task_id="train_model",
        occurred_at=at(-30),
    )
    ids.update(
        stored=stored.artifact_id,
        doomed=doomed.artifact_id,
        outside=outside.artifact_id,
        airflow=airflow.artifact_id,
        first_many=many_artifacts[0].artifact_id,
        doomed_path=Path(doomed_blob.uri.removeprefix("file://")),
    )

    served = Served(None, url, store, ids)
    await served.store_events(
        [*run_old, *run_failed, *run_new, *run_live, *many_artifacts, stored, doomed, outside, airflow]
    )
    settings = ArtifactsSettings(
        database_url=url,
        artifacts_consumer_enabled=False,
        artifact_store_url=store.url,
        artifacts_log_stream_poll_seconds=0.1,
        artifacts_log_stream_grace_seconds=0.5,
        # Its runs are dated 2025: none of them is to look abandoned here.
        artifacts_run_abandoned_after_seconds=10 * 365 * 86400,
    )
    async for client in serve(settings):
        served.client = client
        yield served


# --- artifacts ------------------------------------------------------------------------


async def test_an_empty_store_lists_nothing(new_database):
    url = new_database()
    await migrate(url)
    async for client in serve(ArtifactsSettings(database_url=url, artifacts_consumer_enabled=False)):
        body = (await client.get("/api/artifacts/")).json()
        assert body == {"artifacts": [], "total": 0, "total_is_exact": True, "limit": 50, "next_cursor": None}
        assert (await client.get("/api/artifacts")).json()["total"] == 0
        assert (await client.get("/api/artifacts/by-execution")).json()["executions"] == []
        assert (await client.get("/api/runs")).json() == {
            "runs": [], "total": 0, "total_is_exact": True, "limit": 50, "next_cursor": None
        }


async def test_artifacts_list_newest_first_with_summary_fields(api):
    body = (await api.client.get("/api/artifacts/")).json()
    assert body["total"] == 13
    created = [a["created_at"] for a in body["artifacts"]]
    assert created == sorted(created, reverse=True)
    first = body["artifacts"][0]
    assert set(first) >= {
        "artifact_id",
        "event_id",
        "name",
        "kind",
        "media_type",
        "workflow_id",
        "execution_id",
        "step_name",
        "dag_id",
        "task_id",
        "created_at",
        "stored_at",
        "metadata",
        "uri",
        "size_bytes",
        "sha256",
        "has_inline_payload",
        "content_url",
    }
    assert "payload" not in first
    assert first["created_at"].endswith("Z")
    assert first["content_url"] == f"/api/artifacts/{first['artifact_id']}/content"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"execution_id": "run-many"}, 10),
        ({"execution_id": "run-many", "kind": "features"}, 3),
        ({"kind": "signals"}, 2),
        ({"workflow_id": "legacy_airflow"}, 1),
        ({"dag_id": "legacy_dag"}, 1),
        ({"task_id": "train_model"}, 1),
        ({"step_name": "compute_features"}, 7),
        ({"workflow_id": WF, "step_name": "generate_signals"}, 2),
        ({"created_after": "2025-03-03T15:30:00Z"}, 7),
        ({"created_after": "2025-03-03T15:30:00Z", "created_before": "2025-03-03T15:33:00Z"}, 3),
        ({"created_before": "2025-03-03T09:30:00-05:00"}, 1),
        ({"kind": "nothing-like-this"}, 0),
    ],
)
async def test_artifact_filters(api, query, expected):
    body = (await api.client.get("/api/artifacts/", params=query)).json()
    assert body["total"] == expected
    assert len(body["artifacts"]) == expected
    for artifact in body["artifacts"]:
        for key in ("execution_id", "kind", "workflow_id", "dag_id", "task_id", "step_name"):
            if key in query:
                assert artifact[key] == query[key]


async def test_artifact_pages_by_cursor_cover_everything_once(api):
    seen, cursor = [], None
    while True:
        params = {"execution_id": "run-many", "limit": 3} | ({"cursor": cursor} if cursor else {})
        body = (await api.client.get("/api/artifacts/", params=params)).json()
        assert body["total"] == 10
        assert len(body["artifacts"]) <= 3
        seen += [a["artifact_id"] for a in body["artifacts"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 10


@pytest.mark.parametrize(
    ("params", "status"),
    [({"limit": 501}, 422), ({"limit": 0}, 422), ({"cursor": "garbage"}, 422), ({"created_after": "yesterday"}, 422)],
)
async def test_bad_list_input_is_a_4xx_with_a_message(api, params, status):
    response = await api.client.get("/api/artifacts/", params=params)
    assert response.status_code == status
    assert response.json()["status"] == status
    assert response.json()["error"]


async def test_one_artifact_has_its_payload(api):
    listed = (await api.client.get("/api/artifacts/", params={"kind": "model"})).json()["artifacts"][0]
    detail = (await api.client.get(f"/api/artifacts/{listed['artifact_id']}")).json()
    assert detail["payload"] == {"auc": 0.61}
    assert detail["dag_id"] == "legacy_dag"
    assert detail["has_inline_payload"] is True


async def test_unknown_and_malformed_artifact_ids(api):
    missing = await api.client.get("/api/artifacts/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    assert "no artifact" in missing.json()["error"]
    assert (await api.client.get("/api/artifacts/not-a-uuid")).status_code == 422


async def test_artifacts_grouped_by_execution(api):
    body = (await api.client.get("/api/artifacts/by-execution")).json()
    assert body["total"] == 4
    groups = {g["execution_id"]: g for g in body["executions"]}
    assert groups["run-many"]["artifact_count"] == 10
    assert groups["run-many"]["kinds"] == {"chart": 4, "features": 3, "dataset": 1, "report": 2}
    # Only artifacts, no run.requested or run.started: not a run ibflow runs.
    assert groups["run-many"]["run_status"] == "external"
    assert groups["run-new"]["run_status"] == "succeeded"
    assert groups["run-new"]["kinds"] == {"signals": 1}
    last = [g["last_created_at"] for g in body["executions"]]
    assert last == sorted(last, reverse=True)
    paged, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.client.get("/api/artifacts/by-execution", params=params)).json()
        paged += [g["execution_id"] for g in page["executions"]]
        if not (cursor := page["next_cursor"]):
            break
    assert paged == [g["execution_id"] for g in body["executions"]]
    only = (await api.client.get("/api/artifacts/by-execution", params={"kind": "signals"})).json()
    assert sorted(g["execution_id"] for g in only["executions"]) == ["run-new", "run-old"]


# --- content --------------------------------------------------------------------------


async def test_inline_content_is_the_payload_as_json(api):
    response = await api.client.get(f"/api/artifacts/{api.ids['first_many']}/content")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"i": 0}
    # What a producer stored must not run as a page of this origin, here as at the gateway.
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_stored_content_streams_with_its_media_type(api):
    async with api.client.stream("GET", f"/api/artifacts/{api.ids['stored']}/content") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert body == api.ids["csv_bytes"]
    assert response.headers["etag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_content_whose_hash_no_longer_matches_is_refused(api):
    path = api.ids["doomed_path"]
    path.chmod(0o644)
    path.write_bytes(b"this content WAS tampered with")
    response = await api.client.get(f"/api/artifacts/{api.ids['doomed']}/content")
    assert response.status_code == 409
    assert "sha256" in response.json()["error"]
    assert str(api.store.root) not in response.text


async def test_a_stored_uri_outside_the_store_is_not_read(api):
    response = await api.client.get(f"/api/artifacts/{api.ids['outside']}/content")
    assert 400 <= response.status_code < 500
    assert "root:" not in response.text
    assert "outside the artifact store" in response.json()["error"]
    # Error bodies name the artifact, never where the server keeps things.
    assert str(api.store.root) not in response.text and "/etc/passwd" not in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/api/artifacts/..%2F..%2Fetc%2Fpasswd/content",
        "/api/artifacts/%2e%2e/content",
        "/api/artifacts/%2Fetc%2Fpasswd",
        "/api/artifacts/..%5C..%5Cwindows/content",
        "/api/runs/%2e%2e",
        "/api/runs/%2e%2e/logs",
        "/api/runs/..%2F..%2Fetc%2Fpasswd",
        "/api/runs/run%5C..%5Cx/logs/stream",
        "/api/runs/%2Fetc%2Fpasswd/signals-diff",
    ],
)
async def test_path_tricks_in_identifiers_get_a_4xx(api, path):
    response = await api.client.get(path)
    assert 400 <= response.status_code < 500, (path, response.status_code)
    assert "root:" not in response.text


# --- runs -----------------------------------------------------------------------------


async def test_runs_newest_first_with_status_progress_and_counts(api):
    body = (await api.client.get("/api/runs")).json()
    runs = {r["execution_id"]: r for r in body["runs"]}
    assert body["total"] == len(runs) == 6
    assert [r["execution_id"] for r in body["runs"]][:2] == ["run-many", "run-live"]
    old, failed, live = runs["run-old"], runs["run-failed"], runs["run-live"]
    assert (old["status"], old["progress"], old["steps_total"], old["steps_finished"]) == ("succeeded", 1.0, 4, 4)
    assert old["duration_seconds"] == pytest.approx(4.9 * 60)
    assert old["trigger"] == "manual"
    assert old["artifact_count"] == 1
    assert (failed["status"], failed["error"]) == ("failed", "generate_signals failed: model diverged")
    assert (failed["steps_finished"], failed["progress"]) == (3, 0.75)
    assert (live["status"], live["steps_finished"], live["progress"], live["log_count"]) == ("running", 1, 0.25, 30)
    assert runs["manual__2025-03-03T10:00:00+00:00"]["workflow_id"] == "legacy_airflow"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "succeeded"}, {"run-old", "run-new"}),
        ({"status": "failed"}, {"run-failed"}),
        ({"workflow_id": "legacy_airflow"}, {"manual__2025-03-03T10:00:00+00:00"}),
        ({"trigger": "manual", "workflow_id": WF}, {"run-old", "run-live"}),
        (
            {"started_after": "2025-03-03T14:39:00Z", "started_before": "2025-03-03T15:00:00Z"},
            {"run-failed", "run-new"},
        ),
    ],
)
async def test_run_filters(api, params, expected):
    body = (await api.client.get("/api/runs", params=params)).json()
    assert {r["execution_id"] for r in body["runs"]} == expected
    assert body["total"] == len(expected)


async def test_run_pages_by_cursor(api):
    seen, cursor = [], None
    while True:
        body = (await api.client.get("/api/runs", params={"limit": 4} | ({"cursor": cursor} if cursor else {}))).json()
        seen += [r["execution_id"] for r in body["runs"]]
        if not (cursor := body["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) == 6
    assert (await api.client.get("/api/runs", params={"status": "exploded"})).status_code == 422
    artifacts_cursor = (await api.client.get("/api/artifacts/", params={"limit": 1})).json()["next_cursor"]
    assert (await api.client.get("/api/runs", params={"cursor": artifacts_cursor})).status_code == 422


async def test_run_detail_has_steps_in_order_with_timings(api):
    failed = (await api.client.get("/api/runs/run-failed")).json()
    assert [s["step_name"] for s in failed["steps"]] == STEPS
    assert [s["status"] for s in failed["steps"]] == ["succeeded", "succeeded", "failed", "pending"]
    generate = failed["steps"][2]
    assert generate["error"] == "model diverged"
    assert generate["attempt"] == 1
    assert generate["duration_seconds"] == pytest.approx(30.0)
    assert failed["steps"][3]["started_at"] is None
    new = (await api.client.get("/api/runs/run-new")).json()
    assert [s["artifact_count"] for s in new["steps"]] == [0, 0, 1, 0]


async def test_an_unknown_run_is_a_json_404(api):
    response = await api.client.get("/api/runs/no-such-run")
    assert response.status_code == 404
    assert response.json() == {"error": "no run 'no-such-run'", "status": 404}


# --- signals diff ---------------------------------------------------------------------


async def test_signals_diff_of_a_run_without_one_says_why(api):
    """Runs before signals published the diff, and first runs, have none: a 404 that says so."""
    response = await api.client.get("/api/runs/run-new/signals-diff")
    assert response.status_code == 404
    assert "has no signals diff" in response.json()["error"]
    assert "previous successful run" in response.json()["error"]
    missing = await api.client.get("/api/runs/nope/signals-diff")
    assert missing.status_code == 404 and "no run 'nope'" in missing.json()["error"]


# --- logs -----------------------------------------------------------------------------


async def test_logs_are_json_objects_in_time_order(api):
    body = (await api.client.get("/api/runs/run-live/logs")).json()
    logs = body["logs"]
    assert len(logs) == 30
    assert [r["message"][:7] for r in logs] == [f"line {i:02d}" for i in range(30)]
    first = logs[0]
    assert set(first) == {"id", "event_id", "occurred_at", "level", "step_name", "message", "logger", "fields"}
    assert first["fields"] == {"i": 0, "nested": {"symbols": ["AAPL", "MSFT"]}}
    assert isinstance(first["fields"], dict) and isinstance(first["id"], int)
    assert body["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"step": "compute_features"}, [i for i in range(30) if i % 2]),
        ({"level": "WARNING"}, [i for i in range(30) if LOG_LEVELS[i % 5] in ("WARNING", "ERROR")]),
        ({"level": "error"}, [i for i in range(30) if LOG_LEVELS[i % 5] == "ERROR"]),
        ({"q": "LINE 1"}, list(range(10, 20))),
        ({"q": "50%_"}, [7]),
        ({"q": "%"}, [7]),
        (
            {"step": "fetch_market_data", "level": "INFO", "q": "line 2"},
            [i for i in range(20, 30) if i % 2 == 0 and LOG_LEVELS[i % 5] != "DEBUG"],
        ),
    ],
)
async def test_log_filters(api, params, expected):
    logs = (await api.client.get("/api/runs/run-live/logs", params=params)).json()["logs"]
    assert [r["fields"]["i"] for r in logs] == expected


async def test_log_pages_by_cursor_and_bad_input(api):
    seen, cursor = [], None
    while True:
        body = (
            await api.client.get(
                "/api/runs/run-live/logs", params={"limit": 7} | ({"cursor": cursor} if cursor else {})
            )
        ).json()
        seen += [r["fields"]["i"] for r in body["logs"]]
        if not (cursor := body["next_cursor"]):
            break
    assert seen == list(range(30))
    assert (await api.client.get("/api/runs/run-live/logs", params={"level": "LOUD"})).status_code == 422
    assert (await api.client.get("/api/runs/unknown-run/logs")).status_code == 404


async def read_sse(response: httpx.Response, until_end: bool = True) -> AsyncIterator[tuple[str, str]]:
    event, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line.split(":", 1)[1].strip())


async def test_live_follow_streams_new_records_and_ends_when_the_run_is_done(api):
    existing = (await api.client.get("/api/runs/run-live/logs", params={"limit": 1000})).json()["logs"]
    last_seen = max(r["id"] for r in existing[:-5])
    received, ended = [], None
    async with asyncio.timeout(60):
        async with api.client.stream("GET", "/api/runs/run-live/logs/stream", params={"after": last_seen}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for event, data in read_sse(response):
                if event == "end":
                    ended = json.loads(data)
                    break
                record = json.loads(data)
                assert isinstance(record["fields"], dict)
                received.append(record["fields"]["i"])
                if record["fields"]["i"] == 29:
                    # The run goes on while someone watches: new lines, then it finishes.
                    live = {"workflow_id": WF, "execution_id": "run-live"}
                    await api.store_events(
                        [
                            *running_run_logs(33)[30:],
                            RunSucceeded(**live, occurred_at=datetime.now(UTC)),
                        ]
                    )
    assert received == [25, 26, 27, 28, 29, 30, 31, 32]
    assert ended == {"execution_id": "run-live", "status": "succeeded", "last_id": ended["last_id"]}
    # Reconnecting with Last-Event-ID after the end sends only the end.
    async with asyncio.timeout(30):
        async with api.client.stream(
            "GET", "/api/runs/run-live/logs/stream", headers={"Last-Event-ID": str(ended["last_id"])}
        ) as response:
            events = [event async for event, _ in read_sse(response)]
    assert events == ["end"]
    assert (await api.client.get("/api/runs/nope/logs/stream")).status_code == 404


# --- signals diff (last: it adds a run) ------------------------------------------------


async def test_signals_diff_is_the_signals_services_own_diff_as_published(api):
    """The API serves the signals_diff artifact the signals service published for the run,
    the comparison its report was written from: one rule, one answer."""
    current = signals(("AAPL", "BUY", 0.8), ("MSFT", "SELL", 0.6), ("IBM", "HOLD", 0.5), ("GOOG", "BUY", 0.7))
    before = signals(("AAPL", "BUY", 0.5), ("MSFT", "HOLD", 0.6), ("IBM", "HOLD", 0.52), ("FB", "SELL", 0.4))
    published = diff_signals(current, before, previous_execution_id="run-old")
    ids = {"workflow_id": WF, "execution_id": "run-diffed"}
    await api.store_events([
        *finished_run("run-diffed", 60, ok=True, payload=current)[:-1],
        ArtifactCreated(**ids, step_name="publish_signals", name="signals_diff", kind=SIGNALS_DIFF_KIND,
                        payload=SignalsDiff.model_validate(published).model_dump(mode="json", by_alias=True),
                        occurred_at=at(64.5)),
        RunSucceeded(**ids, occurred_at=at(65)),
    ])
    response = await api.client.get("/api/runs/run-diffed/signals-diff")
    assert response.status_code == 200, response.text
    assert response.json() == published
    assert [(c["symbol"], c["from"], c["to"]) for c in published["changed"]] == [("MSFT", "HOLD", "SELL")]
    assert [m["symbol"] for m in published["strength_moves"]] == ["AAPL"]  # IBM moved less than the threshold


async def test_a_signals_diff_that_breaks_the_contract_is_a_clear_error(api):
    ids = {"workflow_id": WF, "execution_id": "run-bad-diff"}
    await api.store_events([
        *finished_run("run-bad-diff", 70, ok=True, payload=None)[:-1],
        ArtifactCreated(**ids, step_name="publish_signals", name="signals_diff", kind=SIGNALS_DIFF_KIND,
                        payload={"changed": "everything"}, occurred_at=at(74.5)),
        RunSucceeded(**ids, occurred_at=at(75)),
    ])
    response = await api.client.get("/api/runs/run-bad-diff/signals-diff")
    assert response.status_code == 500
    assert "does not match the contract" in response.json()["error"]
