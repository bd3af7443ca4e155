"""The pages' server side, against services answered in memory."""

from __future__ import annotations

import json

import httpx
import pytest

from services.gateway.main import create_app
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

ARTIFACT_ID = "6a1c8f2e-8a4e-4f39-9d3e-0d2b8f0a9c11"
RUN = {
    "execution_id": "run-1", "workflow_id": "wf", "status": "running", "trigger": "manual", "params": {},
    "requested_at": "2026-03-02T14:00:00Z", "started_at": "2026-03-02T14:00:01Z", "finished_at": None,
    "duration_seconds": None, "error": None, "steps_total": 2, "steps_finished": 1, "progress": 0.5,
    "artifact_count": 1, "log_count": 2,
    "steps": [{"step_name": "fetch", "status": "succeeded", "attempt": 1, "started_at": "2026-03-02T14:00:01Z",
               "finished_at": "2026-03-02T14:00:02Z", "duration_seconds": 1.0, "error": None, "artifact_count": 1},
              {"step_name": "score", "status": "running", "attempt": 1, "started_at": "2026-03-02T14:00:02Z",
               "finished_at": None, "duration_seconds": None, "error": None, "artifact_count": 0}],
}
ARTIFACT = {
    "artifact_id": ARTIFACT_ID, "event_id": ARTIFACT_ID, "name": "bars", "kind": "dataset", "media_type": "text/csv",
    "workflow_id": "wf", "execution_id": "run-1", "step_name": "fetch", "dag_id": None, "task_id": None,
    "created_at": "2026-03-02T14:00:02Z", "stored_at": "2026-03-02T14:00:02Z", "metadata": {},
    "uri": "file:///store/x", "size_bytes": 20, "sha256": "0" * 64, "has_inline_payload": False,
    "content_url": f"/api/artifacts/{ARTIFACT_ID}/content", "payload": None,
}
LOGS = [
    {"id": 1, "event_id": "e1", "occurred_at": "2026-03-02T14:00:01Z", "level": "INFO", "step_name": "fetch",
     "message": "<script>alert(1)</script> fetched", "logger": "signals.fetch", "fields": {"bars": {"n": 3}}},
    {"id": 2, "event_id": "e2", "occurred_at": "2026-03-02T14:00:02Z", "level": "INFO", "step_name": "fetch",
     "message": "step fetch succeeded", "logger": "signals.fetch", "fields": {"artifacts": ["bars"]}},
]
WORKFLOWS = {"workflows": [{"workflow_id": "wf", "schedule": {"cron": "0 9 * * 1-5", "paused": False},
                            "next_fire_times": ["2026-03-03T14:00:00Z"]}]}


def services(routes: dict[str, object]):
    """A handler answering `METHOD path` (or just `path`) from `routes`."""

    def handler(request: httpx.Request) -> httpx.Response:
        for key in (f"{request.method} {request.url.path}", request.url.path):
            if key in routes:
                answer = routes[key]
                if isinstance(answer, Exception):
                    raise answer
                return answer(request) if callable(answer) else httpx.Response(200, json=answer)
        return httpx.Response(404, json={"error": f"nothing at {request.url.path}", "status": 404})

    return handler


async def get(handler, path: str, **kwargs) -> httpx.Response:
    app = create_app(GatewaySettings(artifacts_url="http://a", scheduler_url="http://s", signals_url="http://g"),
                     transport=httpx.MockTransport(handler))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return await client.get(path, **kwargs)


async def test_home_goes_to_runs():
    response = await get(services({}), "/")
    assert response.status_code == 307 and response.headers["location"] == "/runs"


async def test_empty_store_explains_how_to_get_artifacts():
    page = await get(services({"/api/artifacts/": {"artifacts": [], "total": 0, "limit": 50, "next_cursor": None},
                               "/api/workflows": WORKFLOWS}), "/artifacts")
    assert page.status_code == 200
    assert "No artifacts yet" in page.text and 'href="/runs#trigger"' in page.text
    assert "2026-03-03 14:00:00 UTC" in page.text


async def test_filters_reach_the_artifacts_service_and_an_empty_result_says_so():
    seen = {}

    def listing(request: httpx.Request) -> httpx.Response:
        seen.update(request.url.params)
        return httpx.Response(200, json={"artifacts": [], "total": 0, "limit": 50, "next_cursor": None})

    page = await get(services({"/api/artifacts/": listing}),
                     "/artifacts?kind=chart&step_name=&created_after=2026-03-02T09:30")
    assert seen == {"kind": "chart", "created_after": "2026-03-02T09:30:00Z", "limit": "50"}
    assert "No artifacts match these filters" in page.text


async def test_a_service_that_does_not_answer_is_named_on_the_page():
    page = await get(services({"/api/artifacts/": httpx.ConnectError("refused")}), "/artifacts")
    assert page.status_code == 503
    assert "The artifacts service is not answering" in page.text


async def test_an_unknown_artifact_is_a_404_page():
    page = await get(services({}), "/artifacts/not-a-uuid")
    assert page.status_code == 404 and "Artifact not found" in page.text


async def test_stored_content_is_read_and_rendered():
    page = await get(services({f"/api/artifacts/{ARTIFACT_ID}": ARTIFACT,
                               f"/api/artifacts/{ARTIFACT_ID}/content":
                                   lambda r: httpx.Response(200, text="symbol,close\nAAPL,549.03\n",
                                                            headers={"content-type": "text/csv"})}),
                     f"/artifacts/{ARTIFACT_ID}")
    assert page.status_code == 200
    assert 'data-renderer="table"' in page.text and '<td class="num">549.03</td>' in page.text


async def test_content_that_no_longer_matches_its_checksum_is_reported():
    page = await get(services({f"/api/artifacts/{ARTIFACT_ID}": ARTIFACT,
                               f"/api/artifacts/{ARTIFACT_ID}/content": lambda r: httpx.Response(
                                   409, json={"error": "stored content does not match its sha256", "status": 409})}),
                     f"/artifacts/{ARTIFACT_ID}")
    assert "stored content does not match its sha256" in page.text
    assert 'data-renderer="download"' in page.text


async def test_run_page_escapes_log_messages_and_links_mentioned_artifacts():
    page = await get(services({"/api/runs/run-1": RUN,
                               "/api/artifacts/": {"artifacts": [ARTIFACT], "total": 1, "limit": 500,
                                                   "next_cursor": None},
                               "/api/runs/run-1/logs": {"logs": LOGS, "next_cursor": "c2"}}),
                     f"/runs/run-1?artifact={ARTIFACT_ID}")
    assert page.status_code == 200
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt; fetched" in page.text
    assert 'href="/ui/runs/run-1/artifact?step=fetch&amp;name=bars"' in page.text
    assert 'data-next-cursor="c2"' in page.text and 'data-live="true"' in page.text
    assert f"data-find-keys='[\"{ARTIFACT_ID}\", \"fetch/bars\"]'" in page.text


async def test_a_run_not_recorded_yet_waits_for_it():
    page = await get(services({}), "/runs/just-requested")
    assert page.status_code == 404
    assert "Waiting for the run to start" in page.text


async def test_log_pages_come_with_their_cursor():
    seen = {}

    def logs(request: httpx.Request) -> httpx.Response:
        seen.update(request.url.params)
        return httpx.Response(200, json={"logs": LOGS[1:], "next_cursor": None})

    fragment = await get(services({"/api/runs/run-1/logs": logs}), "/ui/runs/run-1/log-lines?cursor=c2&level=INFO")
    assert seen == {"cursor": "c2", "level": "INFO", "limit": "200"}
    assert fragment.headers["x-next-cursor"] == "" and fragment.headers["x-last-id"] == "2"
    assert fragment.text.count('class="log-line') == 1


async def test_the_live_stream_sends_rendered_lines_then_the_end():
    def stream(request: httpx.Request) -> httpx.Response:
        assert request.url.params["after"] == "1"
        body = "retry: 2000\n\n" + "".join(f"id: {r['id']}\ndata: {json.dumps(r)}\n\n" for r in LOGS[1:])
        body += 'event: end\ndata: {"status": "succeeded"}\n\n'
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    response = await get(services({"/api/runs/run-1/logs/stream": stream}), "/ui/runs/run-1/log-stream",
                         headers={"Last-Event-ID": "1"})
    events = [block for block in response.text.replace("\r\n", "\n").split("\n\n") if "event:" in block]
    assert "event: line" in events[0] and "id: 2" in events[0]
    assert "step fetch succeeded" in events[0] and 'class="log-line' in events[0]
    assert "event: end" in events[-1] and len(events) == 2


async def test_a_mention_by_name_leads_to_the_artifact():
    seen = {}

    def listing(request: httpx.Request) -> httpx.Response:
        seen.update(request.url.params)
        return httpx.Response(200, json={"artifacts": [ARTIFACT], "total": 1, "limit": 500, "next_cursor": None})

    response = await get(services({"/api/artifacts/": listing}), "/ui/runs/run-1/artifact?step=fetch&name=bars")
    assert response.status_code == 302 and response.headers["location"] == f"/artifacts/{ARTIFACT_ID}"
    assert seen["execution_id"] == "run-1" and seen["step_name"] == "fetch"
    missing = await get(services({"/api/artifacts/": listing}), "/ui/runs/run-1/artifact?step=fetch&name=nope")
    assert missing.status_code == 404 and "no artifact named" in missing.text


async def test_static_files_are_served_with_fingerprinted_urls():
    page = await get(services({"/api/workflows": WORKFLOWS}), "/workflows")
    css = page.text.split('href="/static/app.css?v=')[1].split('"')[0]
    assert len(css) == 10
    assert (await get(services({}), "/static/app.css")).headers["content-type"].startswith("text/css")


# --- any stored value renders ---------------------------------------------------------------

BRACKETS = "[" * 4990 + "]" * 4990
HUGE = "7" * 5000


def raw_json(text: str):
    """An answer written as JSON text: json.dumps cannot even build 5,000 levels."""
    return lambda request: httpx.Response(200, content=text.encode(), headers={"content-type": "application/json"})


def deep(depth: int) -> str:
    return '{"k": ' * depth + "[" * depth + HUGE + "]" * depth + "}" * depth


def odd_log(record_id: int, message: str, fields: str) -> str:
    return (f'{{"id": {record_id}, "event_id": "e{record_id}", "occurred_at": "2026-03-02T14:00:0{record_id}Z",'
            f' "level": "INFO", "step_name": "fetch", "message": {json.dumps(message)}, "logger": "x",'
            f' "fields": {fields}}}')


ODD_LOGS = ('{"logs": [' + ", ".join([
    odd_log(1, BRACKETS, "{}"),
    odd_log(2, "deep", '{"deep": ' + deep(2500) + "}"),
    odd_log(3, "odd \\ud800 text \\u2028 <script>alert(1)</script>", '{"\\udfff": "\\u0000", "n": ' + HUGE + "}"),
    odd_log(4, '{"message": "serialised", "inner": ' + json.dumps("[" * 3000 + "]" * 3000) + "}",
            '{"s": "{\\"a\\": 1}"}'),
]) + '], "next_cursor": "\\u2028bad cursor"}')


def odd_artifact(metadata: str, payload: str, **fields) -> str:
    base = {**ARTIFACT, "has_inline_payload": True, "uri": None, "size_bytes": None, "media_type": "application/json",
            **fields}
    body = json.dumps({k: v for k, v in base.items() if k not in ("metadata", "payload")})
    return body[:-1] + f', "metadata": {metadata}, "payload": {payload}}}'


@pytest.mark.parametrize("path", ["/runs/run-1", "/ui/runs/run-1/log-lines", "/ui/runs/run-1/summary"])
async def test_run_pages_render_any_stored_log_record(path):
    run = json.dumps({**RUN, "params": {}})[:-1].replace('"params": {}', '"params": {"symbols": 5, "deep": '
                                                        + deep(3000) + "}") + "}"
    page = await get(services({"/api/runs/run-1": raw_json(run), "/api/runs/run-1/logs": raw_json(ODD_LOGS),
                               "/api/artifacts/": {"artifacts": [], "total": 0, "limit": 500, "next_cursor": None}}),
                     path)
    assert page.status_code == 200, page.text[:500]
    assert "<script>alert(1)" not in page.text
    if "summary" not in path:
        assert BRACKETS in page.text  # shown as the text it is
        assert "nested deeper than 32 levels" not in page.text or "jt-more" in page.text
        assert page.text.count('class="log-line') == 4
    if path.endswith("log-lines"):
        assert page.headers["x-next-cursor"] == "" and page.headers["x-last-id"] == "4"


@pytest.mark.parametrize("metadata, payload", [
    (deep(300), deep(300)),
    (deep(5000), deep(5000)),
    ('{"n": ' + HUGE + ', "renderer": {"x": 1}}', '{"n": -' + HUGE + ', "f": 1e400}'),
    ('{"\\ud800": "\\udc00\\u0000"}', '"\\ud83d <img src=x onerror=alert(1)>"'),
    ('{"renderer": "table"}',
     '{"columns": ["a", {"name": "b", "description": ' + deep(40) + '}], "rows": [[' + HUGE + ", 1e400]]}"),
    ('{"renderer": "metrics"}', '{"metrics": {"a": ' + HUGE + ', "b": 1.5}, "bars": {"x": 1.5, "y": ' + HUGE + "}}"),
    ('{"renderer": "text"}', deep(400)),
])
async def test_artifact_pages_render_any_stored_value(metadata, payload):
    body = odd_artifact(metadata, payload)
    listing = '{"artifacts": [' + body + '], "total": 1, "limit": 50, "next_cursor": null}'
    routes = services({f"/api/artifacts/{ARTIFACT_ID}": raw_json(body), "/api/artifacts/": raw_json(listing),
                       "/api/workflows": WORKFLOWS})
    for path in (f"/artifacts/{ARTIFACT_ID}", "/artifacts", "/ui/artifacts?execution_id=run-1"):
        page = await get(routes, path)
        assert page.status_code == 200, (path, page.text[:500])
        assert "<img src=x" not in page.text


async def test_the_live_stream_renders_any_stored_record():
    def stream(request: httpx.Request) -> httpx.Response:
        records = [{"id": 1, "message": BRACKETS, "step_name": "fetch", "level": "INFO"},
                   {"id": 5, "message": "a line\u2028separator and \u0085 next line", "fields": {"n": 10**30},
                    "level": 7}]
        body = "".join(f"id: {r['id']}\r\ndata: {json.dumps(r, ensure_ascii=False)}\r\n\r\n" for r in records)
        body += f"data: {'{'}\"id\": 6, \"fields\": {deep(2000)}{'}'}\n\nevent: end\ndata: {{}}\n\n"
        return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})

    response = await get(services({"/api/runs/run-1/logs/stream": stream}), "/ui/runs/run-1/log-stream")
    events = [block for block in response.text.replace("\r\n", "\n").split("\n\n") if "event:" in block]
    assert ["event: line" in e for e in events] == [True, True, True, False] and "event: end" in events[-1]
    assert BRACKETS in events[0] and "separator and \u0085 next line" in events[1]
