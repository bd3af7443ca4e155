"""How artifacts and log records read on the pages: escaped, never `[object Object]`,
never JSON-escaped strings."""

from __future__ import annotations

import re

import pytest

from services.gateway.artifact_views import choose_renderer, decode_content, metrics_card, render_artifact, tabular
from services.gateway.formatting import fmt_duration
from services.gateway.json_tree import json_tree
from services.gateway.log_lines import log_line, matches
from services.gateway.sse import sse_events, sse_lines

pytestmark = pytest.mark.unit

XSS = '<img src=x onerror="alert(1)">'


def text_of(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def artifact(**fields) -> dict:
    base = {"artifact_id": "6a1c8f2e-8a4e-4f39-9d3e-0d2b8f0a9c11", "name": "a", "kind": "dataset",
            "media_type": "application/json", "metadata": {}, "has_inline_payload": True,
            "content_url": "/api/artifacts/6a1c8f2e-8a4e-4f39-9d3e-0d2b8f0a9c11/content"}
    return base | fields


def test_json_tree_escapes_keys_and_values():
    html = str(json_tree({XSS: XSS, "n": [1, 2.5, True, None]}))
    assert "<img" not in html
    assert "&lt;img src=x" in html
    assert '<span class="jt-num">2.5</span>' in html and '<span class="jt-bool">true</span>' in html
    assert '<span class="jt-null">null</span>' in html


def test_json_tree_shows_strings_as_text_and_strings_holding_json_as_trees():
    html = str(json_tree({"quote": 'she said "hi"', "inner": '{"code": 10167, "nested": {"a": [1]}}'}))
    text = text_of(html)
    assert 'she said &#34;hi&#34;' in html or 'she said &quot;hi&quot;' in html
    assert '\\"' not in text and "[object Object]" not in text
    assert "parsed from a string" in text
    assert '<span class="jt-key">code</span>' in html


def test_json_tree_opens_only_the_first_levels():
    html = str(json_tree({"a": {"b": {"c": 1}}}, open_depth=1))
    assert html.count("<details") == 3
    assert html.count("<details class=\"jt-node\" open>") == 1


@pytest.mark.parametrize("fields, renderer", [
    ({"metadata": {"renderer": "table"}}, "table"),
    ({"media_type": "image/png"}, "image"),
    ({"media_type": "text/markdown; charset=utf-8"}, "markdown"),
    ({"media_type": "text/csv"}, "table"),
    ({"media_type": "text/plain"}, "text"),
    ({"kind": "model"}, "metrics"),
    ({"kind": "metrics"}, "metrics"),
    ({"kind": "signals"}, "json"),
    ({"media_type": "application/octet-stream", "has_inline_payload": False}, "download"),
    ({"media_type": "application/octet-stream", "has_inline_payload": False, "kind": "model"}, "download"),
    ({"media_type": "application/vnd.api+json", "has_inline_payload": False, "kind": "model"}, "metrics"),
    ({"metadata": {"renderer": "nonsense"}, "kind": "model"}, "metrics"),
])
def test_renderer_choice(fields, renderer):
    assert choose_renderer(artifact(**fields)) == renderer


def test_table_shapes():
    columns = [{"name": "symbol", "description": "ticker"}, {"name": "rsi", "description": ""}]
    assert tabular({"columns": columns, "rows": [["AAPL", 61.2]]}) == (columns, [["AAPL", 61.2]])
    assert tabular({"columns": ["symbol", "rsi"], "data": [["AAPL", 1]]})[1] == [["AAPL", 1]]
    assert tabular({"columns": ["symbol"], "rows": [{"symbol": "AAPL"}]})[1] == [["AAPL"]]
    records = tabular([{"symbol": "AAPL", "rsi": 1}, {"symbol": "MSFT", "extra": True}])
    assert [c["name"] for c in records[0]] == ["symbol", "rsi", "extra"]
    assert records[1] == [["AAPL", 1, None], ["MSFT", None, True]]
    assert tabular([{"nested": {"a": 1}}]) is None
    assert tabular({"columns": [3], "rows": []}) is None
    assert tabular("a,b") is None


def test_a_table_renders_escaped_cells_and_column_descriptions():
    payload = {"columns": [{"name": "symbol", "description": "the ticker"}, {"name": "rsi", "description": ""}],
               "rows": [[XSS, 61.234567], ["MSFT", None]]}
    view = render_artifact(artifact(metadata={"renderer": "table"}), payload, "table")
    html = str(view.html)
    assert view.renderer == "table"
    assert "<img" not in html and "&lt;img" in html
    assert '<span class="col-desc">the ticker</span>' in html
    assert '<td class="num">61.23</td>' in html and '<td class="null">—</td>' in html


def test_csv_content_renders_as_a_table():
    item = artifact(media_type="text/csv", has_inline_payload=False)
    value = decode_content(item, b"date,close\n2013-01-02,549.03\n2013-01-03,542.1\n")
    view = render_artifact(item, value, "table")
    assert view.renderer == "table"
    assert "<th" in str(view.html) and '<td class="num">549.03</td>' in str(view.html)


def test_a_table_hint_on_something_else_falls_back_to_a_tree_with_a_note():
    view = render_artifact(artifact(), {"not": "a table"}, "table")
    assert view.renderer == "json" and "not table-shaped" in view.note


def test_markdown_is_formatted_and_raw_html_stays_text():
    item = artifact(media_type="text/markdown", kind="report")
    html = str(render_artifact(item, f"# Report\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n{XSS}\n[x](javascript:alert(1))",
                               "markdown").html)
    assert "<h1>Report</h1>" in html and "<table>" in html
    assert "<img" not in html and 'href="javascript' not in html


def test_metrics_card_tiles_numbers_and_keeps_the_rest_readable():
    html = str(metrics_card({"model": "LogisticRegression", "metrics": {"accuracy": 0.5812, "samples": 1840},
                             "feature_importance": {"rsi": 0.4, "sma": -0.2}, "params": {"C": {"grid": [1, 10]}}}))
    assert html.count('class="metric-tile"') == 2
    assert '<div class="metric-value">0.5812</div>' in html and '<div class="metric-value">1840</div>' in html
    assert "<dt>model</dt><dd>LogisticRegression</dd>" in html
    assert 'class="bar-fill negative"' in html
    assert '<span class="jt-key">grid</span>' in html


def test_an_image_loads_from_the_content_url_through_the_gateway():
    item = artifact(media_type="image/png", has_inline_payload=False)
    html = str(render_artifact(item, None, "image").html)
    assert f'<img src="{item["content_url"]}"' in html


def test_unknown_binary_content_is_offered_as_a_download():
    view = render_artifact(artifact(media_type="application/zip", has_inline_payload=False), None, "download")
    assert view.renderer == "download" and "Download" in str(view.html)


def test_a_log_line_reads_like_a_log_line():
    line = log_line({"id": 7, "occurred_at": "2026-03-02T14:30:05.123456Z", "level": "warning",
                     "step_name": "fetch_market_data", "message": "delayed", "logger": "signals.fetch",
                     "fields": {"symbol": "MSFT", "request": {"a": 1}, "bars": [1, 2, 3], "n": None,
                                "long": "x" * 80}}, "run-1")
    assert (line.time, line.level, line.step, line.message) == ("14:30:05.123", "WARNING", "fetch_market_data", "delayed")
    assert line.preview == [("symbol", "MSFT"), ("request", "{…}"), ("bars", "[3]"), ("n", "null")]


def test_a_message_that_is_a_json_object_reads_as_its_text():
    line = log_line({"id": 1, "message": '{"message": "provider answered", "latency_ms": 12}',
                     "fields": {"provider": "ib"}}, "run-1")
    assert line.message == "provider answered"
    assert line.fields == {"latency_ms": 12, "provider": "ib"}


def test_a_log_line_links_the_artifacts_it_mentions():
    line = log_line({"id": 1, "step_name": "generate_signals", "message": "step succeeded",
                     "fields": {"artifacts": ["model", "chart AAPL"], "artifact_id": "6A1C8F2E-8A4E-4F39-9D3E-0D2B8F0A9C11",
                                "other": "model"}}, "run/1")
    assert [m.key for m in line.mentions] == ["generate_signals/model", "generate_signals/chart AAPL",
                                              "6a1c8f2e-8a4e-4f39-9d3e-0d2b8f0a9c11"]
    assert line.mentions[1].href == "/ui/runs/run%2F1/artifact?step=generate_signals&name=chart+AAPL"
    assert line.mentions[2].href == "/artifacts/6A1C8F2E-8A4E-4F39-9D3E-0D2B8F0A9C11"


@pytest.mark.parametrize("record, wanted", [
    ({"level": "INFO", "step_name": "a", "message": "Fetched bars"}, True),
    ({"level": "DEBUG", "step_name": "a", "message": "Fetched bars"}, False),
    ({"level": "INFO", "step_name": "b", "message": "Fetched bars"}, False),
    ({"level": "ERROR", "step_name": "a", "message": "nothing"}, False),
])
def test_live_records_are_filtered_like_the_log_api(record, wanted):
    assert matches(record, level="INFO", step="a", q="fetched") is wanted


async def test_server_sent_events_are_read_as_sent():
    async def lines():
        for line in ["retry: 2000", "", ": keep-alive", "", "id: 1", 'data: {"id": 1}', "",
                     "data: first", "data: second", "", "event: end", "data: {}", ""]:
            yield line

    assert [e async for e in sse_events(lines())] == [("message", '{"id": 1}'), ("message", "first\nsecond"),
                                                      ("end", "{}")]


@pytest.mark.parametrize("seconds, text", [(0.42, "0.42s"), (3.25, "3.2s"), (42, "42s"), (75, "1m 15s"),
                                           (3725, "1h 02m"), (None, "—")])
def test_durations(seconds, text):
    assert fmt_duration(seconds) == text


def test_tables_keep_the_producers_column_order_even_after_jsonb_reordered_the_keys():
    order = ["fold", "train_start", "train_end", "n", "accuracy", "extra_named"]
    # What PostgreSQL's JSONB hands back: keys shortest first; a column the hint does not name.
    stored = [{"n": 3, "fold": 0, "accuracy": 0.5, "train_end": "b", "train_start": "a", "unnamed": 1}]
    card = render_artifact(artifact(kind="model", metadata={"columns": {"folds": order}}), {"folds": stored},
                           "metrics")
    headers = re.findall(r'<th title="[^"]*">([^<]+)', str(card.html))
    assert headers == ["fold", "train_start", "train_end", "n", "accuracy", "unnamed"]
    listing = render_artifact(artifact(metadata={"columns": {"": ["train_start", "fold"]}}), stored, "json")
    assert re.findall(r'<th title="[^"]*">([^<]+)', str(listing.html))[:3] == ["train_start", "fold", "n"]
    unhinted = render_artifact(artifact(kind="model"), {"folds": stored}, "metrics")
    assert re.findall(r'<th title="[^"]*">([^<]+)', str(unhinted.html))[:2] == ["n", "fold"]  # as given, not sorted


async def test_event_stream_lines_end_only_where_the_format_says():
    text = "a\r\nb\rc\nd\u2028e\x85f\r\n\r\nlast"
    for cut in range(len(text) + 1):  # wherever the chunks happen to split, even inside a CRLF
        async def chunks():
            yield text[:cut]
            yield text[cut:]

        assert [line async for line in sse_lines(chunks())] == ["a", "b", "c", "d\u2028e\x85f", "", "last"]
