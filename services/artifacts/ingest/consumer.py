"""The Kafka consumer: batches from the four topics into PostgreSQL, offsets after commit.

A plain aiokafka loop rather than a FastStream subscriber, because this consumer must
control exactly what is committed and when: one database transaction per batch, then
the dead letters, then the offsets of exactly the records that were stored; on a
database outage it seeks back and fetches the same records again. FastStream's batch
subscriber acknowledges by committing the consumer's current position and moves on
past a failed batch, which would skip records until the next restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from services.artifacts.ingest.store import StoreResult, store_batch
from shared import topics
from shared.events import (
    RUN_LIFECYCLE_EVENTS,
    ArtifactCreated,
    DeadLetter,
    Event,
    EventDecodeError,
    LogRecorded,
    RunRequested,
    decode_event,
)
from shared.kafka import consumer_options
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

CONSUMER_NAME = "artifacts"
REFETCH_PAUSE_SECONDS = 1.0
# What may arrive on each consumed topic; anything else is dead-lettered.
ALLOWED_EVENTS: dict[str, tuple[type[Event], ...]] = {
    topics.RUNS_REQUESTED: (RunRequested,),
    topics.RUNS_EVENTS: RUN_LIFECYCLE_EVENTS,
    topics.ARTIFACTS: (ArtifactCreated,),
    topics.LOGS: (LogRecorded,),
}
CONSUMED_TOPICS = tuple(ALLOWED_EVENTS)

# PostgreSQL error classes worth waiting out: connection, rollback (serialization,
# deadlock), resources, operator intervention (shutdown, starting up), system errors.
_TRANSIENT_SQLSTATE_CLASSES = {"08", "40", "53", "57", "58"}

Batch = dict[TopicPartition, list[ConsumerRecord]]
PublishDeadLetter = Callable[[DeadLetter, bytes | None], Awaitable[Any]]
AfterStore = Callable[[Batch], Awaitable[None]]


@dataclass
class Rejected:
    record: ConsumerRecord
    reason: str


@dataclass
class ConsumerStats:
    started_at: datetime | None = None
    last_batch_at: datetime | None = None
    batches: int = 0
    events_stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    assigned: list[str] = field(default_factory=list)


def decode_record(record: ConsumerRecord) -> Event | Rejected:
    """The event a record holds, or why it cannot be stored."""
    if record.value is None:
        return Rejected(record, "record has no value")
    try:
        event = decode_event(record.value, expected=ALLOWED_EVENTS[record.topic])
    except EventDecodeError as exc:
        return Rejected(record, str(exc))
    if event.step_name is None and event.event_type.startswith("step."):
        return Rejected(record, f"{event.event_type} without step_name")
    return event


def is_transient(exc: BaseException) -> bool:
    """A database failure that retrying the same batch can get past."""
    if isinstance(exc, OSError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return sqlstate is not None and sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return False


class DatabaseUnavailable(Exception):
    pass


class BatchConsumer:
    """Consumes the run, artifact and log topics of one consumer group.

    `after_store` runs after the database commit and before the offset commit: the seam
    where a test kills the consumer to show that nothing is lost or stored twice.
    """

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        session_factory: async_sessionmaker,
        publish_dead_letter: PublishDeadLetter,
        group_id: str,
        max_records: int = 500,
        batch_timeout_ms: int = 200,
        db_retry_seconds: float = 30.0,
        client_id: str = "ibflow-artifacts",
        after_store: AfterStore | None = None,
    ) -> None:
        self._kafka = kafka
        self._session_factory = session_factory
        self._publish_dead_letter = publish_dead_letter
        self._group_id = group_id
        self._max_records = max_records
        self._batch_timeout_ms = batch_timeout_ms
        self._db_retry_seconds = db_retry_seconds
        self._client_id = client_id
        self._after_store = after_store
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self.stats = ConsumerStats()

    @property
    def group_id(self) -> str:
        return self._group_id

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *CONSUMED_TOPICS,
            bootstrap_servers=self._kafka.kafka_bootstrap_servers,
            client_id=self._client_id,
            enable_auto_commit=False,
            **consumer_options(self._kafka, group_id=self._group_id),
        )
        try:
            await self._consumer.start()
        except BaseException:
            await self._consumer.stop()
            self._consumer = None
            raise
        self._stopping.clear()
        self.stats.started_at = datetime.now(UTC)
        self._task = asyncio.create_task(self._run(), name="artifacts-consumer")

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand (bounded by `timeout`), then leave the group."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _run(self) -> None:
        assert self._consumer is not None
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=self._batch_timeout_ms, max_records=self._max_records)
                self.stats.assigned = sorted(f"{tp.topic}[{tp.partition}]" for tp in self._consumer.assignment())
                if batch:
                    await self.handle(batch)
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                # The client reconnects by itself; note it and poll again.
                self._note_error(f"broker: {exc!r}")
                await asyncio.sleep(REFETCH_PAUSE_SECONDS)
            except Exception as exc:
                log.exception("consumer loop failed")
                self._note_error(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(REFETCH_PAUSE_SECONDS)

    async def handle(self, batch: Batch) -> None:
        """Store one fetched batch, dead-letter what cannot be stored, then commit offsets."""
        decoded: list[tuple[Event, ConsumerRecord]] = []
        rejected: list[Rejected] = []
        for partition_records in batch.values():
            for record in partition_records:
                outcome = decode_record(record)
                if isinstance(outcome, Rejected):
                    rejected.append(outcome)
                else:
                    decoded.append((outcome, record))
        try:
            result, refused = await self._store(decoded)
            rejected.extend(refused)
            for item in rejected:
                await self._dead_letter(item)
        except Exception as exc:
            # Not stored, or a dead letter not sent: commit nothing, fetch the same
            # records again. Whatever was stored is skipped by event_id next time.
            if not isinstance(exc, DatabaseUnavailable | KafkaError | OSError):
                log.exception("batch failed")
            self._note_error(f"batch not stored, will fetch it again: {_first_line(exc)}")
            self._rewind(batch)
            await asyncio.sleep(REFETCH_PAUSE_SECONDS)
            return
        if self._after_store is not None:
            await self._after_store(batch)
        await self._commit(batch)
        self.stats.batches += 1
        self.stats.events_stored += result.stored
        self.stats.duplicates += result.duplicates
        self.stats.dead_lettered += len(rejected)
        self.stats.last_batch_at = datetime.now(UTC)

    async def _store(self, decoded: Sequence[tuple[Event, ConsumerRecord]]) -> tuple[StoreResult, list[Rejected]]:
        """One transaction for the batch; if the database refuses it, one per event, so a
        single event it cannot take (say a NUL character in a text) is dead-lettered alone."""
        try:
            return await self._with_db_retry(self._store_events, [event for event, _ in decoded]), []
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            log.warning("batch refused, storing its events one by one", extra={"reason": _first_line(exc)})
        stored = duplicates = 0
        refused: list[Rejected] = []
        for event, record in decoded:
            try:
                result = await self._with_db_retry(self._store_events, [event])
            except DatabaseUnavailable:
                raise
            except Exception as exc:
                refused.append(Rejected(record, f"database refused the event: {_first_line(exc)}"))
                continue
            stored += result.stored
            duplicates += result.duplicates
        return StoreResult(stored=stored, duplicates=duplicates), refused

    async def _store_events(self, events: Sequence[Event]) -> StoreResult:
        async with self._session_factory() as session, session.begin():
            return await store_batch(session, events)

    async def _with_db_retry(self, fn, *args):
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_transient),
                wait=wait_exponential(multiplier=0.2, max=5.0),
                stop=stop_after_delay(self._db_retry_seconds),
                before_sleep=lambda state: self._note_error(
                    f"database unavailable, retrying: {_first_line(state.outcome.exception())}"
                ),
                reraise=True,
            ):
                with attempt:
                    return await fn(*args)
        except Exception as exc:
            if is_transient(exc):
                raise DatabaseUnavailable(_first_line(exc)) from exc
            raise

    async def _dead_letter(self, item: Rejected) -> None:
        record = item.record
        letter = DeadLetter.of(
            consumer=CONSUMER_NAME,
            topic=record.topic,
            value=record.value,
            reason=item.reason,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
        )
        log.warning(
            "dead-lettered a record",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "reason": item.reason,
            },
        )
        await self._publish_dead_letter(letter, record.key)

    def _rewind(self, batch: Batch) -> None:
        assert self._consumer is not None
        for tp, partition_records in batch.items():
            try:
                self._consumer.seek(tp, partition_records[0].offset)
            except IllegalStateError:
                pass  # no longer ours after a rebalance: its new owner reads from the committed offset

    async def _commit(self, batch: Batch) -> None:
        assert self._consumer is not None
        offsets = {tp: partition_records[-1].offset + 1 for tp, partition_records in batch.items()}
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took these partitions away; the next owner gets the records again
            # and storage by event_id makes that harmless.
            self._note_error(f"offset commit failed after a rebalance: {exc}")

    def _note_error(self, message: str) -> None:
        log.warning(message)
        self.stats.last_error = message
        self.stats.last_error_at = datetime.now(UTC)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else ""
    return (text.splitlines() or [type(exc).__name__])[0][:500]
