"""The artifacts consumer's loop decodes the next batch while the one before is stored
(in memory, against a fake broker log that honours seeks): batches are still stored and
committed in order, and a batch that fails sends the one fetched after it back too, so
nothing is skipped or stored twice."""

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
from shared.events import DeadLetter, Event, LogRecorded
from shared.settings import KafkaSettings

pytestmark = pytest.mark.unit
PARTITIONS = [TopicPartition(topics.LOGS, p) for p in range(3)]


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


class FakeLog:
    """Three partitions of log records; getmany reads from each partition's position."""

    def __init__(self, per_partition: int) -> None:
        self.records = {
            tp: [Rec(tp.topic, tp.partition, n, f"run-{tp.partition}".encode(),
                     LogRecorded(workflow_id="wf", execution_id=f"run-{tp.partition}", message=f"{tp.partition}/{n}")
                     .to_bytes())
                 for n in range(per_partition)]
            for tp in PARTITIONS
        }
        self.position = dict.fromkeys(PARTITIONS, 0)
        self.committed: dict[TopicPartition, int] = {}

    async def getmany(self, timeout_ms: int, max_records: int):
        await asyncio.sleep(0.001)
        batch, budget = {}, max_records
        for tp in PARTITIONS:
            taken = self.records[tp][self.position[tp] : self.position[tp] + min(budget, 4)]
            if taken:
                batch[tp] = taken
                self.position[tp] = taken[-1].offset + 1
                budget -= len(taken)
        return batch

    def assignment(self):
        return set(PARTITIONS)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position[tp] = offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)

    def all_committed(self) -> bool:
        return all(self.committed.get(tp) == len(self.records[tp]) for tp in PARTITIONS)


class _PgError(Exception):
    sqlstate = "57P01"  # admin shutdown: an outage


async def no_dead_letters(letter: DeadLetter, key: bytes | None) -> None:
    raise AssertionError(f"nothing here is dead-lettered: {letter.reason}")


async def run_until_committed(consumer: BatchConsumer, log: FakeLog) -> None:
    consumer._consumer = log  # the seam: the loop's own calls against a fake client
    task = asyncio.create_task(consumer._run())
    async with asyncio.timeout(30):
        while not log.all_committed():
            await asyncio.sleep(0.005)
    consumer._stopping.set()
    await asyncio.wait_for(task, 10)


@pytest.fixture(autouse=True)
def no_refetch_pause(monkeypatch):
    monkeypatch.setattr("services.artifacts.ingest.consumer.REFETCH_PAUSE_SECONDS", 0)


async def test_the_next_batch_is_decoded_while_one_is_stored_and_all_are_stored_once_in_order():
    log, stored, timeline = FakeLog(per_partition=20), [], []

    async def store(_, events: Sequence[Event]) -> StoreResult:
        timeline.append("store begins")
        await asyncio.sleep(0.01)  # the database at work
        stored.extend(event.message for event in events)
        timeline.append("store ends")
        return StoreResult(stored=len(events), duplicates=0)

    consumer = BatchConsumer(kafka=KafkaSettings(), session_factory=None, publish_dead_letter=no_dead_letters,
                             store=store, group_id="g", max_records=6)
    decode = consumer._decode

    async def decode_and_note(batch):
        timeline.append("decode")
        return await decode(batch)

    consumer._decode = decode_and_note
    await run_until_committed(consumer, log)

    assert sorted(stored) == sorted(f"{p}/{n}" for p in range(3) for n in range(20))
    for p in range(3):
        assert [m for m in stored if m.startswith(f"{p}/")] == [f"{p}/{n}" for n in range(20)]
    overlapped = [i for i, step in enumerate(timeline) if step == "decode"
                  and timeline[:i].count("store begins") > timeline[:i].count("store ends")]
    assert overlapped, timeline


async def test_a_failed_batch_sends_the_batch_fetched_after_it_back_too():
    log, stored, failures = FakeLog(per_partition=12), [], []

    async def store(_, events: Sequence[Event]) -> StoreResult:
        await asyncio.sleep(0.005)
        if "1/5" in {event.message for event in events} and len(failures) < 2:
            failures.append(1)
            raise DBAPIError("stmt", {}, _PgError())
        stored.extend(event.message for event in events)
        return StoreResult(stored=len(events), duplicates=0)

    consumer = BatchConsumer(kafka=KafkaSettings(), session_factory=None, publish_dead_letter=no_dead_letters,
                             store=store, group_id="g", max_records=6, db_retry_seconds=0.01)
    await run_until_committed(consumer, log)

    assert len(failures) == 2
    assert sorted(stored) == sorted(f"{p}/{n}" for p in range(3) for n in range(12))  # each once
    for p in range(3):
        assert [m for m in stored if m.startswith(f"{p}/")] == [f"{p}/{n}" for n in range(12)]
    assert "will fetch it again" in consumer.stats.last_error
