"""The scan of an event's JSON text that lets decoding skip the bounds walk.

It may only ever say "within bounds" of a text whose value the walk accepts, and
`decode_event` must answer exactly as it did with the walk alone: the same event, or
the same reason.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import shared.events
from shared.event_bounds import (
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    BoundsError,
    check_event_fields,
    text_keeps_bounds,
)
from shared.events import ArtifactCreated, EventDecodeError, LogRecorded, decode_event

pytestmark = pytest.mark.unit
IDS = {"workflow_id": "wf", "execution_id": "run-1"}
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = (
    st.integers(min_value=-(10**20), max_value=10**20)
    | st.sampled_from([MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 10**15, 10**16 - 1])
    | st.floats(allow_nan=False, allow_infinity=False)
)
texts = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00", "\ud800", "\udfff", "é", "😀"]),
                max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(texts, children, max_size=6),
    max_leaves=60,
)
# what json.dumps may be asked to write: compact or spaced, ASCII or raw UTF-8
dumps_options = st.sampled_from([{}, {"separators": (",", ":")}, {"ensure_ascii": False},
                                 {"ensure_ascii": False, "separators": (",", ":")}, {"indent": 1}])


def nested(depth: int, as_list: bool = False):
    value = 1
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


def walk_accepts(value: dict) -> bool:
    try:
        check_event_fields(value)
    except BoundsError:
        return False
    return True


def raw_text(value: dict, options: dict) -> bytes | None:
    try:
        return json.dumps(value, **options).encode("utf-8", "surrogatepass")
    except ValueError:
        return None


@FUZZ
@given(st.dictionaries(st.sampled_from(["payload", "metadata", "fields", "params", "message", "other"]),
                       json_values, max_size=5),
       dumps_options)
@example({"payload": nested(MAX_DEPTH)}, {})
@example({"payload": nested(MAX_DEPTH + 1)}, {})
@example({"payload": nested(MAX_DEPTH + 1, as_list=True)}, {"separators": (",", ":")})
@example({"params": [0] * 2100}, {"separators": (",", ":")})
@example({"params": [{}] * 3000}, {"separators": (",", ":")})
@example({"metadata": {"n": 1.5e300}}, {})
@example({"fields": {"n": -(2**53)}}, {})
@example({"fields": {"k\x00": 1}}, {"ensure_ascii": False})
def test_a_text_said_to_keep_the_bounds_holds_a_value_the_walk_accepts(value, options):
    raw = raw_text(value, options)
    if raw is None:
        return
    decoded = json.loads(raw)
    if text_keeps_bounds(raw, decoded):
        assert walk_accepts(decoded), raw[:300]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1e400}', b'{"a": [1.5E+308]}', b'{"a": 12345678901234567}', b'{"a":-9007199254740992}',
        b'{"a": 1' + b"0" * 400 + b'.5}', b'{"a": "x\\u0000"}', b'{"a": "\\ud800"}', b'{"a": "\xed\xa0\x80"}',
        b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", b'{"params": "' + b"x" * 17_000 + b'"}',
        b'{"params": [' + b",".join([b"0"] * 2_100) + b"]}", b'\xff\xfe{\x00}\x00',
    ],
)
def test_texts_that_may_break_a_bound_are_left_to_the_walk(raw):
    assert not text_keeps_bounds(raw, json.loads(raw))


def test_ordinary_events_are_proven_by_the_text():
    metrics = {"rmse": 0.8444218515250481, "n": 123_456_789, "ratio": 1.5e-7, "big": 9e14}
    artifact = ArtifactCreated(**IDS, name="m", kind="metrics", payload=metrics, metadata={"tags": ["a", "b"]})
    log = LogRecorded(**IDS, message="loaded [3] rows {ok}", fields={"rows": 3, "symbol": "AAPL"})
    for event in (artifact, log):
        raw = event.to_bytes()
        assert text_keeps_bounds(raw, json.loads(raw))


def decode_outcome(raw: bytes):
    try:
        return decode_event(raw)
    except EventDecodeError as exc:
        return f"rejected: {exc}"


@FUZZ
@given(st.sampled_from(["payload", "metadata"]), json_values, dumps_options)
def test_decoding_answers_the_same_with_or_without_the_scan(field, value, options):
    body = ArtifactCreated(**IDS, name="n", kind="dataset", payload={"rows": 1}).model_dump(mode="json")
    raw = raw_text(body | {field: value}, options)
    if raw is None:
        return
    with_scan = decode_outcome(raw)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shared.events, "text_keeps_bounds", lambda raw, value: False)
        walked = decode_outcome(raw)
    assert with_scan == walked
