"""decode_event under any bytes, and the bounds producers and consumers share.

Property-based: whatever arrives, decoding returns an event or an `EventDecodeError`
with a reason, never any other exception.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.event_bounds import MAX_DEPTH, MAX_SAFE_INTEGER
from shared.events import (
    DEAD_LETTER_MAX_ORIGINAL_BYTES,
    ArtifactCreated,
    DeadLetter,
    EventDecodeError,
    LogRecorded,
    RunRequested,
    decode_event,
)

pytestmark = pytest.mark.unit
IDS = {"workflow_id": "wf", "execution_id": "run-1"}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def nested(depth: int, leaf=1, key: str | None = "a"):
    value = leaf
    for _ in range(depth):
        value = {key: value} if key is not None else [value]
    return value


def artifact(**overrides) -> dict:
    base = ArtifactCreated(**IDS, name="n", kind="dataset", payload={"rows": 1}).model_dump(mode="json")
    return base | overrides


def decodes_or_rejects(raw: bytes | str) -> None:
    try:
        decode_event(raw)
    except EventDecodeError as exc:
        assert str(exc)  # a reason, always


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=40,
)


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_decode_or_are_rejected_with_a_reason(raw):
    decodes_or_rejects(raw)


@FUZZ
@given(st.text(max_size=2000))
def test_any_text_including_nul_and_surrogates_decodes_or_is_rejected(raw):
    decodes_or_rejects(raw)


@FUZZ
@given(json_values)
def test_any_json_value_decodes_or_is_rejected(value):
    decodes_or_rejects(json.dumps(value))


@FUZZ
@given(st.dictionaries(st.sampled_from(["payload", "metadata", "name", "kind", "occurred_at", "size_bytes", "uri"]),
                       json_values, max_size=4))
def test_an_artifact_with_any_field_values_decodes_or_is_rejected(fields):
    decodes_or_rejects(json.dumps(artifact(**fields)))


def deep_json(depth: int, as_list: bool) -> str:
    """Text of a value `depth` levels deep, built as text: json.dumps itself recurses."""
    return ("[" * depth + "1" + "]" * depth) if as_list else ('{"a":' * depth + "1" + "}" * depth)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 999, 5_000, 100_000])
@pytest.mark.parametrize("as_list", [False, True])
def test_deep_nesting_is_rejected_as_too_deep_in_a_field_or_as_the_whole_value(depth, as_list):
    in_metadata = json.dumps(artifact(metadata={"m": "PLACEHOLDER"})).replace('"PLACEHOLDER"', deep_json(depth, as_list))
    for raw in (in_metadata, deep_json(depth, as_list)):
        with pytest.raises(EventDecodeError, match="deep|must be a JSON object|unknown event_type"):
            decode_event(raw)
    with pytest.raises(EventDecodeError, match="deep"):
        decode_event(in_metadata)


def test_nesting_up_to_the_bound_is_stored_as_sent():
    event = decode_event(json.dumps(artifact(metadata=nested(MAX_DEPTH - 1))))
    assert event.metadata == nested(MAX_DEPTH - 1)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"event_type": "log.record", "n": ' + "1" * 5_000 + "}", "not acceptable JSON"),
        (json.dumps(artifact(payload={"n": MAX_SAFE_INTEGER + 1})), "integer outside"),
        (json.dumps(artifact(metadata={"n": -(10**30)})), "integer outside"),
        (json.dumps(artifact(payload={"x": float("nan")})), "NaN is not a JSON number"),
        (json.dumps(artifact(payload={"x": "a\u0000b"})), "NUL"),
        (json.dumps(artifact(metadata={"k\ud800": 1})), "surrogate"),
        (json.dumps(artifact(occurred_at="2099-01-01T00:00:00Z")), "ahead of this clock"),
        (json.dumps(artifact(metadata={"blob": "x" * 70_000})), "larger than"),
        ('{"event_type": "log.record", "message": "' + "x" * (1024 * 1024) + '"}', "larger than"),
    ],
)
def test_values_outside_the_bounds_are_rejected_with_the_reason(raw, reason):
    with pytest.raises(EventDecodeError, match=reason):
        decode_event(raw)


def test_the_future_skew_is_the_consumers_to_set():
    soon = datetime.now(UTC) + timedelta(minutes=30)
    raw = json.dumps(artifact(occurred_at=soon.isoformat()))
    with pytest.raises(EventDecodeError, match="ahead"):
        decode_event(raw)
    assert decode_event(raw, max_future_skew=timedelta(hours=1)).occurred_at == soon


def test_json_that_merely_looks_deep_is_a_valid_log_message():
    message = "[" * 4_990 + "]" * 4_990
    event = decode_event(LogRecorded(**IDS, message=message).to_bytes())
    assert event.message == message


@pytest.mark.parametrize(
    "build",
    [
        lambda: ArtifactCreated(**IDS, name="n", kind="k", payload=nested(40)),
        lambda: ArtifactCreated(**IDS, name="n", kind="k", payload={"x": 1}, metadata={"n": 2**60}),
        lambda: LogRecorded(**IDS, message="m", fields={"deep": nested(MAX_DEPTH)}),
        lambda: LogRecorded(**IDS, message="a\x00b"),
        lambda: RunRequested(**IDS, trigger="manual", occurred_at=datetime(2099, 1, 1, tzinfo=UTC)),
    ],
)
def test_producers_cannot_build_what_consumers_would_refuse(build):
    with pytest.raises(ValidationError):
        build()


def test_a_dead_letter_of_a_huge_record_stays_small_and_says_it_was_cut():
    value = b"x" * (DEAD_LETTER_MAX_ORIGINAL_BYTES * 4)
    letter = DeadLetter.of(consumer="c", topic="t", value=value, reason="too big")
    assert letter.original_truncated and letter.original_size_bytes == len(value)
    assert len(letter.to_bytes()) < 3 * DEAD_LETTER_MAX_ORIGINAL_BYTES
    whole = DeadLetter.of(consumer="c", topic="t", value=b"\xff\xfe", reason="bad")
    assert not whole.original_truncated and whole.original_value_base64 == "//4="
