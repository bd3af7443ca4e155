"""`ibflow runs | run | logs | artifacts`: tables, log lines like the run page's, the live
follow over server-sent events, downloads checked against their sha256, and errors in
words."""

from __future__ import annotations

import hashlib
import io
import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from ibflow import runs_cli, sse
from ibflow.log_lines import log_line, parts, safe
from ibflow.trigger import Gateway, GatewayError, GatewayUnreachable

pytestmark = pytest.mark.unit
GW = "http://gw"
RUN = {
    "execution_id": "manual-0123", "workflow_id": "ibkr_trading_signal_workflow", "status": "partial",
    "trigger": "manual", "params": {"symbols": ["AAPL", "TSLA"]}, "requested_at": "2026-03-02T14:30:00Z",
    "started_at": "2026-03-02T14:30:01Z", "finished_at": "2026-03-02T14:31:01Z", "duration_seconds": 60.0,
    "error": None, "steps_total": 4, "steps_finished": 4, "artifact_count": 2, "log_count": 3,
    "failed_items": [{"item": "TSLA", "step": "fetch_market_data", "reason": "no security definition", "code": 200}],
    "steps": [
        {"step_name": "fetch_market_data", "status": "succeeded", "attempt": 1, "duration_seconds": 2.5,
         "error": None, "skipped_reason": None, "artifact_count": 2},
        {"step_name": "publish_signals", "status": "skipped", "attempt": 0, "duration_seconds": None,
         "error": None, "skipped_reason": "step generate_signals failed", "artifact_count": 0},
    ],
}
CONTENT = b"date,close\n2013-03-01,430.47\n"
ARTIFACT = {"artifact_id": "4b7a", "name": "market_data.csv", "kind": "market_data", "step_name": "fetch_market_data",
            "execution_id": "manual-0123", "created_at": "2026-03-02T14:30:02Z", "size_bytes": len(CONTENT),
            "has_inline_payload": False, "sha256": hashlib.sha256(CONTENT).hexdigest(), "task_id": None}
RECORDS = [
    {"id": 1, "occurred_at": "2026-03-02T14:30:05.123456Z", "level": "INFO", "step_name": "fetch_market_data",
     "message": "fetched bars", "fields": {"symbol": "AAPL", "bars": 250}},
    {"id": 2, "occurred_at": "2026-03-02T14:30:06Z", "level": "WARNING", "step_name": "fetch_market_data",
     "message": "TSLA: no security definition\n(code 200)", "fields": {}},
]


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=False, color_system=None), out


def gateway(handler) -> Gateway:
    return Gateway(httpx.Client(transport=httpx.MockTransport(handler)), GW)


def api(request: httpx.Request) -> httpx.Response:
    path, query = request.url.path, request.url.params
    if path == "/api/runs":
        return httpx.Response(200, json={"runs": [RUN], "total": 1, "total_is_exact": True, "limit": 20,
                                         "next_cursor": None})
    if path == "/api/runs/manual-0123":
        return httpx.Response(200, json=RUN)
    if path == "/api/runs/missing" or path == "/api/runs/missing/logs":
        return httpx.Response(404, json={"error": "no run 'missing'", "status": 404})
    if path == "/api/runs/manual-0123/logs":
        page = RECORDS[:1] if "cursor" not in query else RECORDS[1:]
        return httpx.Response(200, json={"logs": page, "limit": 1000,
                                         "next_cursor": None if "cursor" in query else "c1"})
    if path == "/api/artifacts/":
        return httpx.Response(200, json={"artifacts": [ARTIFACT], "total": 1, "total_is_exact": True,
                                         "limit": 500, "next_cursor": None})
    if path == "/api/artifacts/4b7a":
        return httpx.Response(200, json=ARTIFACT)
    if path == "/api/artifacts/4b7a/content":
        return httpx.Response(200, content=CONTENT)
    return httpx.Response(500, json={"error": f"unexpected {path}"})


def test_runs_are_a_table_with_status_steps_and_counts():
    out_console, out = console()
    runs_cli.list_runs(gateway(api), out_console, workflow=None, status=None, limit=20)
    header, row, *rest = out.getvalue().splitlines()
    assert header.split()[:3] == ["execution_id", "workflow", "status"]
    assert row.split() == ["manual-0123", "ibkr_trading_signal_workflow", "partial", "manual", "2026-03-02",
                           "14:30:01", "1m00s", "4/4", "2", "3"]
    assert rest == ["1 of 1 run(s), newest first"]


def test_a_run_shows_its_steps_with_why_failed_items_and_artifacts():
    out_console, out = console()
    runs_cli.show_run(gateway(api), out_console, "manual-0123")
    text = out.getvalue()
    assert text.startswith("manual-0123  partial\n")
    assert "  symbols   AAPL,TSLA" in text and f"  page      {GW}/runs/manual-0123" in text
    assert "publish_signals    skipped" in text and "step generate_signals failed" in text
    assert "  TSLA (fetch_market_data): no security definition [code 200]" in text
    assert "artifacts (1)" in text and "market_data.csv" in text


def test_log_lines_read_like_the_run_page_and_stay_one_line_each():
    out_console, out = console()
    assert runs_cli.print_logs(gateway(api), out_console, "manual-0123", level=None, step=None) == 2
    assert out.getvalue().splitlines() == [
        '14:30:05.123 INFO     fetch_market_data  fetched bars  {"symbol":"AAPL","bars":250}',
        "14:30:06.000 WARNING  fetch_market_data  TSLA: no security definition\\n(code 200)",
    ]


def test_a_message_that_is_a_json_object_reads_as_its_text_with_the_rest_as_fields():
    time, level, step, message, fields = parts({
        "occurred_at": "2026-03-02T14:30:05Z", "level": "error", "step_name": None,
        "message": '{"event": "request failed", "status": 503}', "fields": {"url": "/x"}})
    assert (time, level, step, message, fields) == ("14:30:05.000", "ERROR", "-", "request failed",
                                                   {"status": 503, "url": "/x"})


def test_escape_sequences_from_the_network_never_reach_the_terminal():
    line = log_line({"occurred_at": "x", "level": "INFO\x1b[2J", "step_name": "s\r", "message": "a\x1b]0;pwned\x07b",
                     "fields": {"k": "\x9b31m"}}).plain
    assert "\x1b" not in line and "\x07" not in line and "\r" not in line and "\x9b" not in line
    assert "\\x1b]0;pwned\\x07" in line


@given(st.text())
def test_any_text_is_one_printable_line(text):
    shown = safe(text)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown
    assert not any(0x80 <= ord(c) <= 0x9f or ord(c) < 0x20 for c in shown)


def test_coloured_on_a_terminal():
    out = io.StringIO()
    Console(file=out, force_terminal=True, color_system="standard").print(log_line(RECORDS[1]))
    assert "\x1b[33m" in out.getvalue()  # WARNING in yellow


def test_artifacts_list_and_a_download_checked_against_its_hash(tmp_path):
    out_console, out = console()
    runs_cli.list_artifacts(gateway(api), out_console, filters={"kind": "market_data"}, limit=50)
    assert "4b7a" in out.getvalue() and "market_data.csv" in out.getvalue()
    target = tmp_path / "data.csv"
    done = runs_cli.download_artifact(gateway(api), "4b7a", str(target))
    assert target.read_bytes() == CONTENT and done.sha256 == ARTIFACT["sha256"]
    assert list(tmp_path.iterdir()) == [target]


def test_a_download_whose_bytes_do_not_match_is_not_saved(tmp_path):
    def tampered(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/content"):
            return httpx.Response(200, content=b"something else")
        return api(request)

    with pytest.raises(GatewayError, match="not saved"):
        runs_cli.download_artifact(gateway(tampered), "4b7a", str(tmp_path / "data.csv"))
    assert list(tmp_path.iterdir()) == []


def test_the_default_file_name_is_the_artifacts_name_without_folders():
    assert runs_cli._file_name({"name": "../../etc/passwd", "artifact_id": "x"}) == "etc_passwd"
    assert runs_cli._file_name({"name": "chart AAPL.svg", "artifact_id": "x"}) == "chart_AAPL.svg"
    assert runs_cli._file_name({"name": "...", "artifact_id": "x"}) == "x"
    assert runs_cli._file_name({"name": "chart_AAPL", "media_type": "image/svg+xml"}) == "chart_AAPL.svg"
    assert runs_cli._file_name({"name": "report", "media_type": "text/markdown; charset=utf-8"}) == "report.md"


def test_an_unknown_run_and_an_unreachable_gateway_are_errors_in_words():
    with pytest.raises(runs_cli.NotFound, match="no run 'missing'"):
        runs_cli.show_run(gateway(api), console()[0], "missing")

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(GatewayUnreachable, match="cannot reach the gateway at http://gw"):
        runs_cli.list_runs(gateway(refused), console()[0], workflow=None, status=None, limit=5)
    with pytest.raises(GatewayUnreachable, match="could not be opened"):
        runs_cli.follow_logs(gateway(refused), console()[0], "manual-0123", level=None, step=None)


def stream(*events: str) -> bytes:
    return ("retry: 2000\n\n" + "".join(events)).encode()


def test_follow_prints_every_record_then_the_new_ones_and_ends_with_the_run():
    body = stream(*(f"id: {r['id']}\ndata: {json.dumps(r)}\n\n" for r in RECORDS), ": keep-alive\n\n",
                  'event: end\ndata: {"execution_id": "manual-0123", "status": "partial", "last_id": 2}\n\n')
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    out_console, out = console()
    end = runs_cli.follow_logs(gateway(handler), out_console, "manual-0123", level="WARNING", step=None)
    assert end == {"execution_id": "manual-0123", "status": "partial", "last_id": 2}
    assert len(out.getvalue().splitlines()) == 2
    assert seen[0].url.params["level"] == "WARNING" and seen[0].url.params["after"] == "0"


def test_a_stream_closed_without_its_end_resumes_after_the_last_record(monkeypatch):
    monkeypatch.setattr(runs_cli.time, "sleep", lambda seconds: None)
    bodies = [stream(f"id: 1\ndata: {json.dumps(RECORDS[0])}\n\n"),
              stream(f"id: 2\ndata: {json.dumps(RECORDS[1])}\n\n", 'event: end\ndata: {"status": "succeeded"}\n\n')]
    afters = []

    def handler(request: httpx.Request) -> httpx.Response:
        afters.append(request.url.params["after"])
        return httpx.Response(200, content=bodies.pop(0))

    out_console, out = console()
    assert runs_cli.follow_logs(gateway(handler), out_console, "manual-0123", level=None, step=None) == {
        "status": "succeeded"}
    assert afters == ["0", "1"]
    assert len(out.getvalue().splitlines()) == 2


def test_event_stream_lines_split_only_at_cr_lf_or_crlf_across_chunks():
    chunks = ["data: a\u2028b\r", "\ndata: c\x85d\r\r", "id: 7\ndata: x", "\n\n", "data: cut"]
    assert list(sse.events(sse.lines(chunks))) == [
        sse.ServerEvent("message", "a\u2028b\nc\x85d", None),
        sse.ServerEvent("message", "x", "7"),
    ]
