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
from shared.events import (
    EXECUTION_EVENTS,
    ArtifactCreated,
    EventDecodeError,
    LogRecorded,
    RunFailed,
    RunRequested,
    RunStarted,
    StepFailed,
    decode_event,
)

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


# --- validated straight from the text ------------------------------------------------------

def test_events_are_validated_straight_from_their_text():
    # Whether the straight way also skips the bounds walk is a matter of speed, which
    # make bench measures; here: it exists, and it decodes exactly what it was given.
    assert shared.events._STRAIGHT is not None, "pydantic's schemas changed shape: every event is decoded slowly"
    events = [LogRecorded(**IDS, message="m"), ArtifactCreated(**IDS, name="n", kind="k", payload=[1])]
    for event in events:
        assert decode_event(event.to_bytes()) == event
    assert all(cls.__pydantic_complete__ for cls in EXECUTION_EVENTS)


def careful_outcome(raw: bytes):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shared.events, "_STRAIGHT", None)
        return decode_outcome(raw)


some_events = st.sampled_from([
    ArtifactCreated(**IDS, name="n", kind="dataset", payload={"rows": [1, 2.5, "x"]}, metadata={"m": 1}),
    ArtifactCreated(**IDS, name="n", kind="model", uri="s3://b/k", size_bytes=3, sha256="a" * 64),
    LogRecorded(**IDS, step_name="s", message="hello", fields={"n": 1}),
    RunRequested(**IDS, trigger="manual", params={"symbols": ["AAPL"]}),
    RunStarted(**IDS, steps=["a", "b"], params={"x": 1}),
    RunFailed(**IDS, error="boom", failed_items=[{"item": "TSLA", "step": "s", "reason": "r", "code": 200}]),
    StepFailed(**IDS, step_name="s", attempt=2, error="e"),
])
field_names = st.sampled_from(["payload", "metadata", "fields", "params", "message", "name", "kind", "uri",
                               "size_bytes", "sha256", "occurred_at", "event_id", "attempt", "steps",
                               "failed_items", "event_type", "level", "unknown", "step_name", "workflow_id"])
odd_texts = st.sampled_from(['NaN', '-Infinity', '1e400', '"2099-01-01T00:00:00Z"', '"2024-01-01T00:00:00"',
                             '"not-a-uuid"', '12345678901234567', '1.5', 'true', 'null', '[]', '{}', '"log.record"',
                             '"artifact.created"', '"x\\u0000"'])


@FUZZ
@given(some_events, st.lists(st.tuples(field_names, json_values), max_size=3),
       st.lists(st.tuples(field_names, odd_texts), max_size=2), dumps_options)
def test_an_event_validated_straight_from_its_text_is_the_one_the_careful_way_makes(event, values, odd, options):
    body = event.model_dump(mode="json") | dict(values)
    raw = raw_text(body, options)
    if raw is None:
        return
    for name, text in odd:  # what json.dumps would not write: appended as a duplicate key
        raw = raw[:-1] + b', "' + name.encode() + b'": ' + text.encode() + b"}"
    assert decode_outcome(raw) == careful_outcome(raw)


def artifact_text(tail: str) -> bytes:
    body = ArtifactCreated(**IDS, name="n", kind="k", payload={"x": 1}).model_dump_json()
    return (body[:-1] + tail + "}").encode()


@pytest.mark.parametrize("tail", [
    ', "payload": NaN', ', "payload": {"x": -Infinity}', ', "payload": [Infinity]', ', "unknown": 1',
    ', "event_type": "log.record"', ', "payload": 1e999', ', "payload": "a\\u0000"', ', "occurred_at": "2099-01-01T00:00Z"',
    ', "payload": 123456789012345678901234567890', ', "metadata": "not an object"', "",
])
def test_text_the_two_ways_could_read_apart_is_read_the_careful_way(tail):
    raw = artifact_text(tail)
    assert decode_outcome(raw) == careful_outcome(raw)
