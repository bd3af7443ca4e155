"""The one consumer rule, and the artifacts batch loop under it (in memory, no I/O).

Whatever a record holds and however its handler fails, it is handled or dead-lettered
once; outages are waited out without loss; nothing fetched is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from aiokafka import TopicPartition
from sqlalchemy.exc import DBAPIError

from services.artifacts.ingest.consumer import BatchConsumer
from services.artifacts.ingest.store import StoreResult
from shared import topics
from shared.consuming import ConsumerRule
from shared.events import ArtifactCreated, DeadLetter, Event, LogRecorded, events_of
from shared.settings import KafkaSettings

pytestmark = pytest.mark.unit
IDS = {"workflow_id": "wf", "execution_id": "run-1"}


@dataclass(frozen=True)
class Rec:
    topic: str
    value: bytes | None
    partition: int = 0
    offset: int = 0
    key: bytes | None = b"run-1"


class DeadLetters(list):
    async def __call__(self, letter: DeadLetter, key: bytes | None) -> None:
        self.append(letter)


def rule(dead: DeadLetters, **options) -> ConsumerRule:
    options = {"retry_pause_seconds": 0.001, "max_wait_seconds": 0.001, **options}
    return ConsumerRule(consumer="test", expected={topics.LOGS: events_of(topics.LOGS)},
                        publish_dead_letter=dead, **options)


def log_record(message: str = "hello", offset: int = 0) -> Rec:
    return Rec(topics.LOGS, LogRecorded(**IDS, message=message).to_bytes(), offset=offset)


class _PgError(Exception):
    sqlstate = "57P01"  # admin shutdown: an outage


OUTAGE = DBAPIError("stmt", {}, _PgError())


async def test_poison_is_dead_lettered_once_and_the_handler_never_sees_it():
    dead, seen = DeadLetters(), []

    async def handler(event: Event) -> None:
        seen.append(event)

    for value in (b"[" * 5000, b"{\"event_type\": \"log.record\", \"n\": " + b"9" * 5000 + b"}", None, b"\xff"):
        assert await rule(dead).handle(Rec(topics.LOGS, value), handler) is None
    assert seen == [] and len(dead) == 4
    assert all(letter.reason for letter in dead)


async def test_a_record_of_a_topic_the_consumer_does_not_take_is_dead_lettered():
    dead = DeadLetters()
    record = Rec(topics.ARTIFACTS, ArtifactCreated(**IDS, name="a", kind="k", payload={}).to_bytes())
    assert await rule(dead).handle(record, pytest.fail) is None
    assert "does not consume" in dead[0].reason


async def test_an_outage_is_waited_out_and_the_record_handled_once_it_passes():
    dead, calls = DeadLetters(), []
    consumer = rule(dead, max_attempts=2)

    async def handler(event: Event) -> None:
        calls.append(event)
        if len(calls) <= 5:  # more outages than max_attempts: they must not count
            raise OUTAGE

    assert await consumer.handle(log_record(), handler) is not None
    assert len(calls) == 6 and dead == []
    assert consumer.status.waiting_since is None and consumer.status.handled == 1


async def test_an_outage_longer_than_the_patience_raises_so_the_record_is_delivered_again():
    consumer = rule(DeadLetters(), transient_patience_seconds=0.01)

    async def handler(event: Event) -> None:
        await asyncio.sleep(0.005)
        raise OUTAGE

    with pytest.raises(DBAPIError):
        await consumer.handle(log_record(), handler)
    assert consumer.status.waiting_since is not None  # /health can say the consumer is paused


async def test_a_handler_that_keeps_failing_is_tried_max_attempts_times_then_dead_lettered_alone():
    dead, calls = DeadLetters(), []

    async def handler(event: Event) -> None:
        calls.append(event)
        raise TypeError("a bug that this record triggers")

    assert await rule(dead, max_attempts=3).handle(log_record(), handler) is None
    assert len(calls) == 3
    [letter] = dead
    assert "handling failed 3 times: TypeError: a bug that this record triggers" in letter.reason


async def test_cancellation_is_not_a_failure():
    dead = DeadLetters()

    async def handler(event: Event) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await rule(dead).handle(log_record(), handler)
    assert dead == []


# --- the artifacts batch loop -------------------------------------------------------


class FakeKafkaConsumer:
    def __init__(self) -> None:
        self.committed: dict[TopicPartition, int] = {}
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)


def batch_consumer(dead: DeadLetters, store) -> tuple[BatchConsumer, FakeKafkaConsumer]:
    consumer = BatchConsumer(kafka=KafkaSettings(consumer_max_attempts=2), session_factory=None,
                             publish_dead_letter=dead, store=store, group_id="g", db_retry_seconds=0.01)
    kafka = FakeKafkaConsumer()
    consumer._consumer = kafka  # the seam: the loop's own calls against a fake client
    return consumer, kafka


@pytest.fixture(autouse=True)
def no_refetch_pause(monkeypatch):
    monkeypatch.setattr("services.artifacts.ingest.consumer.REFETCH_PAUSE_SECONDS", 0)


async def test_an_unexpected_failure_rewinds_and_a_record_that_keeps_failing_is_dead_lettered_alone():
    tp = TopicPartition(topics.LOGS, 0)
    records = [log_record(f"line {i}", offset=i) for i in range(5)]
    stored: list[str] = []

    async def store(_, events: Sequence[Event]) -> StoreResult:
        if any(event.message == "line 2" for event in events):
            raise TypeError("this record breaks the store")
        stored.extend(event.message for event in events)
        return StoreResult(stored=len(events), duplicates=0)

    dead = DeadLetters()
    consumer, kafka = batch_consumer(dead, store)
    # the whole batch fails: it is rewound (the one-by-one fallback stores around the
    # poison inside the store path; here the store itself is what fails, so the loop's
    # own isolation is what must find the record)

    async def without_per_event_fallback(decoded):
        return await store(None, [event for event, _ in decoded]), []

    consumer._store = without_per_event_fallback
    pending = list(records)
    for _ in range(20):
        if not pending:
            break
        size = 1 if consumer._isolate_records else len(pending)
        batch, pending_rest = pending[:size], pending[size:]
        before = dict(kafka.committed)
        await consumer.handle({tp: batch})
        if kafka.committed != before:
            pending = pending_rest
    assert pending == []
    assert stored == ["line 0", "line 1", "line 3", "line 4"]
    [letter] = dead
    assert letter.source_offset == 2 and "TypeError: this record breaks the store" in letter.reason
    assert kafka.committed[tp] == 5
    assert (tp, 0) in kafka.seeks  # the failed batch was fetched again, not skipped


async def test_a_database_outage_rewinds_without_dead_lettering():
    tp = TopicPartition(topics.LOGS, 0)

    async def store(_, events):
        raise OUTAGE

    dead = DeadLetters()
    consumer, kafka = batch_consumer(dead, store)
    for _ in range(5):
        await consumer.handle({tp: [log_record(offset=7)]})
    assert dead == [] and kafka.committed == {}
    assert kafka.seeks == [(tp, 7)] * 5
