"""The consumer's pure parts: what each topic accepts, what counts as a passing outage,
and the page cursors of the query API."""

import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from aiokafka import ConsumerRecord
from fastapi import HTTPException
from sqlalchemy.exc import DBAPIError

from services.artifacts.api.cursors import decode_cursor, encode_cursor
from services.artifacts.api.deps import execution_id
from services.artifacts.ingest.consumer import CONSUMED_TOPICS, decode_record, new_rule
from shared import topics
from shared.consuming import Rejected, is_transient
from shared.events import ArtifactCreated, LogRecorded, RunRequested, StepStarted, StepSucceeded
from shared.settings import KafkaSettings

pytestmark = pytest.mark.unit
IDS = {"workflow_id": "wf", "execution_id": "run-1"}


async def _no_dead_letters(letter, key):
    raise AssertionError("decoding publishes nothing")


RULE = new_rule(KafkaSettings(), _no_dead_letters)


def record(topic: str, value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=b"run-1",
        value=value,
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=len(value or b""),
        headers=(),
    )


GOOD = {
    topics.RUNS_REQUESTED: RunRequested(**IDS, trigger="manual"),
    topics.RUNS_EVENTS: StepSucceeded(**IDS, step_name="fetch_market_data"),
    topics.ARTIFACTS: ArtifactCreated(**IDS, name="a", kind="dataset", payload={"rows": 1}),
    topics.LOGS: LogRecorded(**IDS, message="hello", fields={"n": 1}),
}


@pytest.mark.parametrize("topic", CONSUMED_TOPICS)
def test_each_topic_accepts_its_own_events(topic):
    assert decode_record(record(topic, GOOD[topic].to_bytes()), RULE) == GOOD[topic]


@pytest.mark.parametrize("topic", CONSUMED_TOPICS)
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe not json", "not valid UTF-8 JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"event_type": "run.exploded"}', "unknown event_type"),
        (None, "no value"),
    ],
)
def test_undecodable_values_are_rejected_with_a_reason(topic, value, reason):
    outcome = decode_record(record(topic, value), RULE)
    assert isinstance(outcome, Rejected)
    assert reason in outcome.reason


def test_an_event_on_the_wrong_topic_is_rejected():
    outcome = decode_record(record(topics.LOGS, GOOD[topics.ARTIFACTS].to_bytes()), RULE)
    assert isinstance(outcome, Rejected)
    assert "does not belong here" in outcome.reason


def test_an_invalid_event_names_the_field():
    bad = GOOD[topics.ARTIFACTS].model_dump(mode="json") | {"payload": None}
    outcome = decode_record(record(topics.ARTIFACTS, json.dumps(bad).encode()), RULE)
    assert isinstance(outcome, Rejected)
    assert "inline payload or a uri" in outcome.reason


def test_a_step_event_without_a_step_name_is_rejected():
    outcome = decode_record(record(topics.RUNS_EVENTS, StepStarted(**IDS).to_bytes()), RULE)
    assert isinstance(outcome, Rejected)
    assert "without step_name" in outcome.reason


class _PgError(Exception):
    def __init__(self, sqlstate):
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (DBAPIError("stmt", {}, _PgError("57P01")), True),  # admin shutdown
        (DBAPIError("stmt", {}, _PgError("40P01")), True),  # deadlock
        (DBAPIError("stmt", {}, _PgError("22021")), False),  # bad byte sequence: this event, forever
        (DBAPIError("stmt", {}, _PgError("23505")), False),
        (ValueError("bug"), False),
    ],
)
def test_only_outages_count_as_transient(error, transient):
    assert is_transient(error) is transient


def test_cursors_round_trip_and_refuse_other_lists_and_garbage():
    when = datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    ident = uuid4()
    cursor = encode_cursor("artifacts", when, str(ident))
    assert decode_cursor("artifacts", cursor, (datetime, type(ident))) == (when, ident)
    for bad in (cursor[:-3], "not-a-cursor", encode_cursor("artifacts", "yesterday", "x")):
        with pytest.raises(HTTPException) as caught:
            decode_cursor("artifacts", bad, (datetime, type(ident)))
        assert caught.value.status_code == 400
    with pytest.raises(HTTPException):
        decode_cursor("runs", cursor, (datetime, str))


@pytest.mark.parametrize("bad", ["..", ".", "../etc/passwd", "/etc/passwd", "a\\b", "a/b", "run\x00"])
def test_path_tricks_in_an_execution_id_are_refused(bad):
    with pytest.raises(HTTPException) as caught:
        execution_id(bad)
    assert caught.value.status_code == 400


def test_ordinary_execution_ids_pass():
    for good in ("manual__2025-01-02T03:04:05+00:00", "scheduled_2025.01.02", "run..1"):
        assert execution_id(good) == good
