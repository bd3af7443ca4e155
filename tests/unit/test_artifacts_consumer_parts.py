"""The consumer's pure parts: what each topic accepts, what counts as a passing outage."""

import json

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy.exc import DBAPIError

from services.artifacts.ingest.consumer import CONSUMED_TOPICS, decode_record, new_rule
from shared import topics
from shared.artifact_store import ArtifactStore
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


STORE = ArtifactStore.from_url("file:///srv/ibflow/artifact-store")
IN_STORE = STORE.uri_for("ab" + "0" * 62)


@pytest.mark.parametrize("uri", [
    "file:///etc/passwd",
    "file:///srv/ibflow/artifact-store/../../../etc/passwd",
    "file:///srv/ibflow/artifact-store/sha256/ab/" + "0" * 62 + "/../x",
    "http://evil.example/content",
    "s3://someone-elses-bucket/sha256/ab/" + "ab" + "0" * 62,
    "file:///srv/ibflow/artifact-store-other/sha256/ab/" + "ab" + "0" * 62,
])
def test_an_artifact_whose_uri_is_outside_the_store_is_rejected_with_the_reason(uri):
    event = ArtifactCreated(**IDS, name="a", kind="dataset", uri=uri, sha256="ab" + "0" * 62, size_bytes=1)
    outcome = decode_record(record(topics.ARTIFACTS, event.to_bytes()), RULE, STORE)
    assert isinstance(outcome, Rejected)
    assert "uri this service will not read" in outcome.reason


def test_an_artifact_in_the_store_is_accepted():
    event = ArtifactCreated(**IDS, name="a", kind="dataset", uri=IN_STORE, sha256="ab" + "0" * 62, size_bytes=1)
    assert decode_record(record(topics.ARTIFACTS, event.to_bytes()), RULE, STORE) == event


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
