"""Reading and writing the real broker from the chaos tests, with plain aiokafka clients."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared import topics
from shared.events import DeadLetter


async def skip_to_end(bootstrap: str, group_id: str, topic_names: Iterable[str]) -> int:
    """Commit a new group at the end of its topics, so the service under test takes only
    what this test sends, not what other modules left on the session's broker (end
    offsets are unreliable on tansu, so it reads to the end). Returns how many partitions
    the topics have."""
    consumer = AIOKafkaConsumer(
        *topic_names, bootstrap_servers=bootstrap, group_id=group_id, auto_offset_reset="earliest",
        enable_auto_commit=False, session_timeout_ms=3000, heartbeat_interval_ms=1000, fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            assert time.monotonic() < deadline, f"group {group_id} got no partitions"
            await consumer.getmany(timeout_ms=200)
        while await consumer.getmany(timeout_ms=1000, max_records=5000):
            assert time.monotonic() < deadline + 120, f"could not read to the end of {topic_names}"
        await consumer.commit()
        return len(consumer.assignment())
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, keep: Callable[[ConsumerRecord], bool],
                     idle_seconds: float = 2.0, timeout: float = 120.0) -> list[ConsumerRecord]:
    """Every record of `topic` that `keep` accepts, from the beginning until nothing came
    for `idle_seconds` (no group, nothing committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    kept: list[ConsumerRecord] = []
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert partitions, f"the broker has no topic {topic}"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_seconds:
            assert time.monotonic() < deadline, f"{topic} kept delivering for {timeout:.0f}s"
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            if batch:
                idle_since = time.monotonic()
            kept += [record for records in batch.values() for record in records if keep(record)]
    finally:
        await consumer.stop()
    return kept


async def dead_letters(bootstrap: str, keys: set[str], **options) -> list[DeadLetter]:
    """The dead letters of records whose key is one of `keys`."""
    wanted = {key.encode() for key in keys}
    records = await read_topic(bootstrap, topics.DEADLETTER, lambda record: record.key in wanted, **options)
    return [DeadLetter.model_validate_json(record.value) for record in records]
