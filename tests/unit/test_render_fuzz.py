"""Property-based fuzzing of everything that turns stored values into pages or API
answers: the gateway's JSON tree, log lines, artifact views and content decoding, and
the artifacts API's response mapping. Whatever the value (arbitrary JSON, deep nesting
up to 10,000 levels, huge or non-finite numbers, NUL, lone surrogates, invalid UTF-8),
they return HTML that encodes as UTF-8 with nothing from the input left unescaped, or
JSON that any reader parses; never an exception."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape

from services.artifacts.api import mapping
from services.artifacts.db.models import Artifact, LogRecord
from services.gateway.artifact_views import RENDERERS, choose_renderer, decode_content, render_artifact
from services.gateway.json_tree import embedded_json, json_tree
from services.gateway.log_lines import log_line, matches
from services.gateway.templating import Templates
from shared import bounded_json
from shared.bounded_json import MAX_DEPTH

pytestmark = pytest.mark.unit

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEMPLATES = Templates(token_required=False)
NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
# What an attacker would like to see come out unescaped.
HOSTILE = ("<script>alert(1)</script>", '<img src=x onerror="alert(1)">', "</details></div><script>", "&lt;",
           '{"a": "<script>"}', "[" * 40 + "]" * 40, "[" * 4990 + "]" * 4990, '{"message": "<b>x</b>"}')
UNSAFE_MARKUP = re.compile(r"<\s*(script|img|iframe|svg|b)\b", re.IGNORECASE)
DEPTHS = [1, 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 100, 999, 1000, 5000, 10_000]

characters = st.one_of(
    st.characters(),  # any code point but surrogates
    st.characters(categories=["Cs"]),  # lone surrogates
    st.sampled_from(["\x00", "\u2028", "\u2029", "\x85", "\ufeff", "\u202e", "\u200d", "\U0001f600", "\\", '"']),
)
texts = st.one_of(
    st.text(characters, max_size=40),
    st.sampled_from(HOSTILE),
    st.binary(max_size=60).map(lambda raw: raw.decode("utf-8", "replace")),  # invalid UTF-8, replaced
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.sampled_from([2**53, -(2**53) - 1, 2**63]),
    # Built by a function: hypothesis could not even print such a number as a strategy argument.
    st.sampled_from([4300, 4301, 5000]).map(lambda digits: 7 * 10**digits),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)


def containers(children):
    return st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(texts, children, max_size=6),
    )


json_values = st.recursive(scalars, containers, max_leaves=40)
# A string that holds JSON (a value serialised twice), possibly deep or broken.
serialised = json_values.map(lambda v: json.dumps(bounded_json.bounded(v), ensure_ascii=False))
values = st.one_of(json_values, serialised, st.lists(serialised, max_size=3))


def nested(depth: int, shape: str) -> Any:
    value: Any = "<script>leaf</script>"
    for level in range(depth):
        if shape == "list" or (shape == "mixed" and level % 2):
            value = [value]
        else:
            value = {"<k>": value}
    return value


def nested_text(depth: int) -> str:
    return '{"k": ' * depth + "[" * depth + "1" + "]" * depth + "}" * depth


def assert_safe_html(html: Any) -> str:
    text = str(html)
    text.encode("utf-8")  # no lone surrogate survives into a page
    assert UNSAFE_MARKUP.search(text) is None, UNSAFE_MARKUP.search(text)
    return text


def assert_readable_json(text: str) -> Any:
    value = json.loads(text)  # the standard library's reader: no 1,000-level or 4,300-digit limit is hit
    text.encode("utf-8")
    return value


def depth_of(value: Any) -> int:
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def artifact(**fields: Any) -> dict[str, Any]:
    return {"artifact_id": str(uuid.uuid4()), "name": "a", "kind": "metrics", "media_type": "application/json",
            "metadata": {}, "has_inline_payload": True, "content_url": "/api/artifacts/x/content"} | fields


def artifact_row(metadata: Any, payload: Any) -> Artifact:
    return Artifact(artifact_id=uuid.uuid4(), event_id=uuid.uuid4(), name="a", kind="model",
                    media_type="application/json", workflow_id="wf", execution_id="run-1", step_name=None,
                    dag_id=None, task_id=None, created_at=NOW, stored_at=NOW, metadata_=metadata, payload=payload,
                    uri=None, size_bytes=None, sha256=None)


def log_row(message: str, fields: Any) -> LogRecord:
    return LogRecord(id=1, event_id=uuid.uuid4(), workflow_id="wf", execution_id="run-1", step_name="s",
                     occurred_at=NOW, level="INFO", level_no=20, message=message, logger=None, fields=fields)


def rendered_log_line(record: dict[str, Any]) -> str:
    return assert_safe_html(TEMPLATES.macro("log_line", log_line(record, "run-1")))


# --- the gateway's renderers ----------------------------------------------------------------


@FUZZ
@given(values, st.integers(min_value=0, max_value=40))
def test_the_json_tree_renders_any_value(value, open_depth):
    html = assert_safe_html(json_tree(value, open_depth=open_depth))
    assert html.startswith('<div class="jt">') and html.endswith("</div>")
    assert html.count("<details") == html.count("</details>")


@FUZZ
@given(texts)
def test_embedded_json_reads_a_value_or_leaves_the_text(text):
    found = embedded_json(text)
    assert found is None or isinstance(found, (dict, list))
    if found is not None:
        assert depth_of(found) <= MAX_DEPTH


@FUZZ
@given(st.dictionaries(st.sampled_from(["id", "occurred_at", "level", "step_name", "message", "logger", "fields"]),
                       values, max_size=7),
       texts)
def test_a_log_line_renders_any_record(record, query):
    html = rendered_log_line(record)
    assert 'class="log-line' in html
    matches(record, level="INFO", step="s", q=query)


@FUZZ
@given(st.one_of(st.dictionaries(st.sampled_from(["renderer", "x"]), values, max_size=2), values),
       st.sampled_from([*RENDERERS, "download", "image"]),
       values,
       st.sampled_from(["model", "metrics", "signals", "chart"]))
def test_an_artifact_view_renders_any_value(metadata, renderer, value, kind):
    item = artifact(metadata=metadata, kind=kind)
    choose_renderer(item)
    view = render_artifact(item, value, renderer)
    assert_safe_html(view.html)
    assert view.note is None or isinstance(view.note, str)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["application/json", "text/csv", "text/plain", "text/markdown"]))
def test_stored_content_of_any_bytes_renders(raw, media_type):
    item = artifact(media_type=media_type, has_inline_payload=False)
    value = decode_content(item, raw)
    assert_safe_html(render_artifact(item, value, choose_renderer(item)).html)


# --- the artifacts API's answers ------------------------------------------------------------


@FUZZ
@given(values, values)
def test_an_artifact_row_always_serializes(metadata, payload):
    detail = mapping.artifact_detail(artifact_row(metadata, payload))
    answer = assert_readable_json(detail.model_dump_json())
    assert isinstance(answer["metadata"], dict)
    assert depth_of(answer["metadata"]) <= MAX_DEPTH and depth_of(answer["payload"]) <= MAX_DEPTH
    assert_readable_json(bounded_json.dumps(payload))  # the content endpoint's inline JSON


@FUZZ
@given(texts, values)
def test_a_log_row_always_serializes(message, fields):
    row = log_row(bounded_json.clean_text(message), fields)
    answer = assert_readable_json(mapping.log_record(row).model_dump_json())
    assert isinstance(answer["fields"], dict)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_parse_to_a_value_or_a_value_error(raw):
    try:
        value = bounded_json.loads(raw)
    except ValueError:
        return
    assert depth_of(value) <= MAX_DEPTH
    assert_readable_json(bounded_json.dumps(value))


# --- nesting built directly, 1 to 10,000 levels ------------------------------------------


@pytest.mark.parametrize("shape", ["list", "dict", "mixed"])
@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_values_render_everywhere(depth, shape):
    value = nested(depth, shape)
    tree = assert_safe_html(json_tree(value, open_depth=depth))
    assert ("nested deeper than" in tree) is (depth > MAX_DEPTH)
    rendered_log_line({"id": 1, "message": "deep", "fields": {"deep": value}})
    for renderer in ("json", "table", "metrics", "text"):
        assert_safe_html(render_artifact(artifact(metadata={"deep": value}), {"deep": value}, renderer).html)
    answer = assert_readable_json(mapping.artifact_detail(artifact_row({"deep": value}, value)).model_dump_json())
    assert depth_of(answer["metadata"]) == min(depth + 1, MAX_DEPTH)
    assert depth_of(answer["payload"]) == min(depth, MAX_DEPTH)
    assert_readable_json(mapping.log_record(log_row("m", {"deep": value})).model_dump_json())


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_json_text_is_read_bounded_or_left_as_text(depth):
    text = nested_text(depth)
    value = bounded_json.loads(text)
    assert depth_of(value) == min(2 * depth, MAX_DEPTH)
    found = embedded_json(text)
    assert (found is None) is (2 * depth > MAX_DEPTH)
    html = rendered_log_line({"id": 1, "message": text, "fields": {"s": text}})
    if found is None:
        assert str(escape(text)) in html  # shown as the text it is
    content = decode_content(artifact(has_inline_payload=False), text.encode())
    assert_safe_html(render_artifact(artifact(), content, "json").html)


def test_the_bracket_message_is_a_plain_log_line():
    brackets = "[" * 4990 + "]" * 4990
    line = log_line({"id": 1, "message": brackets, "fields": {}}, "run-1")
    assert line.message == brackets and line.fields == {}
    assert brackets in rendered_log_line({"id": 1, "message": brackets})
