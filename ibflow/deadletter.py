"""`ibflow deadletter list|replay`: what consumers could not take, and sending it back.

The dead-letter topic is read from its beginning by a throwaway consumer (no group,
nothing committed), so looking never moves any consumer's offsets. Its end is where
the broker has had nothing more to give for a moment after answering every
partition: the local broker's end offsets cannot be trusted, a quiet fetch can.

Replay publishes the original bytes to the source topic with the original key, so the
record lands on the partition it came from and its consumer sees it as it was. Valid
events are stored once however often they are replayed (consumers deduplicate on
`event_id`); a record that is still invalid is dead-lettered again, with a new id.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from shared import topics
from shared.events import DeadLetter
from shared.settings import KafkaSettings

REPLAY_HEADER = "ibflow-replay-of"
LIST_COLUMNS = ("time", "id", "consumer", "source", "key", "reason")


class DeadLetterError(Exception):
    """Something the user asked for cannot be done; the message says why."""


@dataclass(frozen=True)
class Letter:
    letter: DeadLetter
    partition: int
    offset: int

    @property
    def id(self) -> str:
        return str(self.letter.dead_letter_id)

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.letter.original_value_base64, validate=True)

    @property
    def source(self) -> str:
        letter = self.letter
        where = f"[{letter.source_partition}]" if letter.source_partition is not None else ""
        at = f"@{letter.source_offset}" if letter.source_offset is not None else ""
        return f"{letter.source_topic}{where}{at}"

    def cells(self) -> tuple[str, ...]:
        letter = self.letter
        return (_time(letter.failed_at), self.id, letter.consumer, self.source,
                letter.source_key or "", letter.reason)


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%SZ")


def parse(value: bytes | None, partition: int, offset: int) -> Letter | None:
    """Tolerant like every consumer: fields a newer producer adds are ignored."""
    try:
        data = json.loads(value or b"")
        known = {k: v for k, v in data.items() if k in DeadLetter.model_fields}
        letter = DeadLetter.model_validate(known)
        base64.b64decode(letter.original_value_base64, validate=True)
    except (ValueError, AttributeError, ValidationError, binascii.Error, RecursionError):
        return None
    return Letter(letter, partition, offset)


@dataclass
class Reading:
    letters: list[Letter]
    unreadable: int  # records on the topic that are not dead letters
    existing_topics: frozenset[str]


async def read_letters(settings: KafkaSettings, *, source_topic: str | None = None,
                       idle_seconds: float = 1.5) -> Reading:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="ibflow-deadletter-cli",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    try:
        await consumer.start()
        existing = frozenset(await consumer.topics())
        numbers = consumer.partitions_for_topic(topics.DEADLETTER)
        if not numbers:
            raise DeadLetterError(f"the topic {topics.DEADLETTER} does not exist on "
                                  f"{settings.kafka_bootstrap_servers}: create it with `ibflow topics`")
        partitions = [TopicPartition(topics.DEADLETTER, p) for p in sorted(numbers)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        reading = Reading([], 0, existing)
        quiet_since = time.monotonic()
        while True:
            batches = await consumer.getmany(timeout_ms=250)
            for records in batches.values():
                for record in records:
                    quiet_since = time.monotonic()
                    letter = parse(record.value, record.partition, record.offset)
                    if letter is None:
                        reading.unreadable += 1
                    elif source_topic is None or letter.letter.source_topic == source_topic:
                        reading.letters.append(letter)
            answered = all(consumer.highwater(tp) is not None for tp in partitions)
            if answered and time.monotonic() - quiet_since >= idle_seconds:
                break
    finally:
        await consumer.stop()
    reading.letters.sort(key=lambda found: (found.letter.failed_at, found.partition, found.offset))
    return reading


def select(letters: list[Letter], dead_letter_id: str | None) -> list[Letter]:
    """All of them, or the one whose id is `dead_letter_id` (or starts with it, if unique)."""
    if dead_letter_id is None:
        return letters
    wanted = dead_letter_id.strip().lower()
    exact = [found for found in letters if found.id == wanted]
    matches = exact or [found for found in letters if found.id.startswith(wanted)]
    if not matches:
        raise DeadLetterError(f"no dead letter with id {dead_letter_id} on {topics.DEADLETTER}")
    if len({found.id for found in matches}) > 1:
        raise DeadLetterError(f"{len(matches)} dead letters have ids starting with {dead_letter_id}: give more of it")
    return matches[:1]


@dataclass(frozen=True)
class Replayed:
    letter: Letter
    partition: int
    offset: int


def check_replayable(letters: list[Letter], existing_topics: frozenset[str]) -> None:
    for found in letters:
        source = found.letter.source_topic
        if source == topics.DEADLETTER:
            raise DeadLetterError(f"dead letter {found.id} came from {topics.DEADLETTER} itself; "
                                  "replaying it would only loop")
        if source not in existing_topics:
            # Producing would auto-create it with the broker's own partition count.
            raise DeadLetterError(f"dead letter {found.id} came from {source}, which no longer exists")


async def replay(settings: KafkaSettings, letters: list[Letter]) -> list[Replayed]:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="ibflow-deadletter-replay",
        enable_idempotence=settings.kafka_enable_idempotence,
    )
    done = []
    try:
        await producer.start()
        for found in letters:
            key = found.letter.source_key
            metadata = await producer.send_and_wait(
                found.letter.source_topic, found.original,
                key=key.encode() if key is not None else None,
                headers=[(REPLAY_HEADER, found.id.encode())],
            )
            done.append(Replayed(found, metadata.partition, metadata.offset))
    finally:
        await producer.stop()
    return done
