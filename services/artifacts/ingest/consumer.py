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
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from sqlalchemy.ext.asyncio import async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from services.artifacts import metrics
from services.artifacts.ingest.store import PreparedBatch, StoreResult, store_batch
from services.artifacts.ingest.trace_ids import store_trace_ids
from shared import topics
from shared.artifact_store import ArtifactStore, UnsafeUriError
from shared.consuming import ConsumerRule, PublishDeadLetter, Rejected, is_transient
from shared.events import ArtifactCreated, Event, events_of
from shared.kafka import consumer_options
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)

CONSUMER_NAME = "artifacts"
REFETCH_PAUSE_SECONDS = 1.0
# Records decoded between two turns of the event loop (a few milliseconds of work).
DECODE_SLICE = 25
# A batch holds a few hundred thousand tracked objects (events, their payloads) for the
# length of its transaction; at Python's default thresholds (700, 10, 10) the cyclic
# collector rescanned them hundreds of times per batch: a third of the consumer's CPU in
# the ingest benchmark. With these, collections still happen, some hundred times rarer.
GC_THRESHOLDS = (50_000, 20, 10)
# What may arrive on each consumed topic; anything else is dead-lettered.
ALLOWED_EVENTS: dict[str, tuple[type[Event], ...]] = {
    topic: events_of(topic) for topic in (topics.RUNS_REQUESTED, topics.RUNS_EVENTS, topics.ARTIFACTS, topics.LOGS)
}
CONSUMED_TOPICS = tuple(ALLOWED_EVENTS)

Batch = dict[TopicPartition, list[ConsumerRecord]]
AfterStore = Callable[[Batch], Awaitable[None]]


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
    # When the group last gave this member its partitions (monotonic clock): where a
    # measurement of the consumer starts, without the seconds a group join takes.
    assigned_at: float | None = None


class NoteAssignment(ConsumerRebalanceListener):
    def __init__(self, stats: ConsumerStats) -> None:
        self._stats = stats

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        self._stats.assigned_at = time.monotonic()


def new_rule(kafka: KafkaSettings, publish_dead_letter: PublishDeadLetter) -> ConsumerRule:
    return ConsumerRule(
        consumer=CONSUMER_NAME,
        expected=ALLOWED_EVENTS,
        publish_dead_letter=publish_dead_letter,
        max_future_skew=timedelta(seconds=kafka.event_max_future_skew_seconds),
        max_attempts=kafka.consumer_max_attempts,
    )


def decode_record(record: ConsumerRecord, rule: ConsumerRule, store: ArtifactStore | None = None) -> Event | Rejected:
    """The event a record holds, or why it cannot be stored."""
    event = rule.decode(record)
    if isinstance(event, Event) and event.step_name is None and event.event_type.startswith("step."):
        return Rejected(record, f"{event.event_type} without step_name")
    if isinstance(event, ArtifactCreated) and event.uri is not None and store is not None:
        # Content is only ever read from this service's store: a uri elsewhere
        # (file:///etc/passwd, ../, http://) would be listed but never served.
        try:
            store.digest_of(event.uri)
        except UnsafeUriError as exc:
            return Rejected(record, f"artifact.created with a uri this service will not read: {exc}")
    return event


class DatabaseUnavailable(Exception):
    pass


class _DecodedEvents(list):
    """(event, record) pairs, with the events prepared for `store_batch` alongside."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared = PreparedBatch()

    def add(self, event: Event, record: ConsumerRecord) -> None:
        self.append((event, record))
        self.prepared.add(event)


@dataclass
class _Decoded:
    """A fetched batch, decoded: what to store, what to dead-letter, how long it took."""

    batch: Batch
    records: list[ConsumerRecord]
    events: _DecodedEvents = field(default_factory=_DecodedEvents)
    rejected: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0


def _earliest(*batches: Batch) -> Batch:
    """Per partition, the records of whichever batch starts earliest: where to seek back to."""
    merged: Batch = {}
    for batch in batches:
        for tp, records in batch.items():
            if tp not in merged or records[0].offset < merged[tp][0].offset:
                merged[tp] = records
    return merged


class BatchConsumer:
    """Consumes the run, artifact and log topics of one consumer group. Starting it raises
    the process's garbage-collection thresholds (`GC_THRESHOLDS`).

    `after_store` runs after the database commit and before the offset commit: the seam
    where a test kills the consumer to show that nothing is lost or stored twice.
    """

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        session_factory: async_sessionmaker,
        publish_dead_letter: PublishDeadLetter,
        store: Callable[[async_sessionmaker, Sequence[Event]], Awaitable[StoreResult]] | None = None,
        group_id: str,
        max_records: int = 500,
        batch_timeout_ms: int = 200,
        max_partition_fetch_bytes: int = 1024 * 1024,
        fetch_max_bytes: int = 50 * 1024 * 1024,
        db_retry_seconds: float = 30.0,
        client_id: str = "ibflow-artifacts",
        after_store: AfterStore | None = None,
        artifact_store: ArtifactStore | None = None,
    ) -> None:
        self._kafka = kafka
        self._session_factory = session_factory
        self._rule = new_rule(kafka, publish_dead_letter)
        self._store_in = store or _store_in_transaction
        # set after a batch failed `max_attempts` times: that many records are then
        # fetched one at a time, so the one that fails is dead-lettered alone
        self._isolate_records = 0
        self._failures: dict[tuple[TopicPartition, int], int] = {}
        self._group_id = group_id
        self._max_records = max_records
        self._batch_timeout_ms = batch_timeout_ms
        self._max_partition_fetch_bytes = max_partition_fetch_bytes
        self._fetch_max_bytes = fetch_max_bytes
        self._db_retry_seconds = db_retry_seconds
        self._client_id = client_id
        self._after_store = after_store
        self._artifact_store = artifact_store
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self.stats = ConsumerStats()

    @property
    def group_id(self) -> str:
        return self._group_id

    @property
    def kafka_client(self) -> AIOKafkaConsumer | None:
        """The aiokafka client while started (`/metrics` reads its lag)."""
        return self._consumer

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def max_records(self) -> int:
        return self._max_records

    @property
    def batch_timeout_ms(self) -> int:
        return self._batch_timeout_ms

    def client_options(self) -> dict[str, Any]:
        """What this consumer's aiokafka client is built with (the benchmark reads the
        same records with the same options to measure the broker's own rate)."""
        return {
            "bootstrap_servers": self._kafka.kafka_bootstrap_servers,
            "client_id": self._client_id,
            "enable_auto_commit": False,
            "max_partition_fetch_bytes": self._max_partition_fetch_bytes,
            "fetch_max_bytes": self._fetch_max_bytes,
            **consumer_options(self._kafka, group_id=self._group_id),
        }

    async def start(self) -> None:
        _collect_less_often()
        self._consumer = AIOKafkaConsumer(**self.client_options())
        self._consumer.subscribe(CONSUMED_TOPICS, listener=NoteAssignment(self.stats))
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
        """Fetch and decode the next batch while the one before is being stored: decoding
        is this process's work, storing mostly the database's. Batches are still stored,
        dead-lettered and committed one after the other, in the order fetched."""
        assert self._consumer is not None
        storing: tuple[Batch, asyncio.Task[bool]] | None = None
        try:
            while not self._stopping.is_set():
                try:
                    max_records = 1 if self._isolate_records else self._max_records
                    batch = await self._consumer.getmany(timeout_ms=self._batch_timeout_ms, max_records=max_records)
                    self.stats.assigned = sorted(f"{tp.topic}[{tp.partition}]" for tp in self._consumer.assignment())
                except KafkaError as exc:
                    # The client reconnects by itself; note it and poll again.
                    self._note_error(f"broker: {exc!r}")
                    await asyncio.sleep(REFETCH_PAUSE_SECONDS)
                    continue
                except Exception as exc:
                    log.exception("consumer loop failed")
                    self._note_error(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(REFETCH_PAUSE_SECONDS)
                    continue
                decoded = await self._decode(batch) if batch else None
                if storing is not None:
                    before, task = storing
                    storing = None
                    if not await task:
                        # The batch before is to be fetched again, so this one is too.
                        self._rewind(_earliest(before, batch))
                        continue
                if decoded is not None:
                    storing = (batch, asyncio.create_task(self._finish_safely(decoded)))
        except asyncio.CancelledError:
            if storing is not None:
                storing[1].cancel()
                await asyncio.gather(storing[1], return_exceptions=True)
            raise
        if storing is not None:
            await storing[1]  # the batch in hand is finished before the consumer stops

    async def handle(self, batch: Batch) -> None:
        """Store one fetched batch, dead-letter what cannot be stored, then commit offsets.

        Whatever fails, the batch is fetched again (nothing skipped); a batch that keeps
        failing for a reason that is not an outage is retried record by record, and the
        record that still fails is dead-lettered alone.
        """
        await self._finish(await self._decode(batch))

    async def _decode(self, batch: Batch) -> _Decoded:
        records = [record for partition_records in batch.values() for record in partition_records]
        decoded = _Decoded(batch, records)
        for start in range(0, len(records), DECODE_SLICE):
            started = time.perf_counter()
            for record in records[start : start + DECODE_SLICE]:
                outcome = decode_record(record, self._rule, self._artifact_store)
                if isinstance(outcome, Rejected):
                    decoded.rejected.append(outcome)
                else:
                    decoded.events.add(outcome, record)
            decoded.seconds += time.perf_counter() - started
            # Between slices the batch before this one goes on talking to the database.
            await asyncio.sleep(0)
        return decoded

    async def _finish_safely(self, decoded: _Decoded) -> bool:
        """`_finish`, and what escapes it (the offset commit, `after_store`) noted, the
        batch sought back and a pause, as for a failed batch."""
        try:
            return await self._finish(decoded)
        except asyncio.CancelledError:
            raise
        except KafkaError as exc:
            self._note_error(f"broker: {exc!r}")
        except Exception as exc:
            log.exception("consumer loop failed")
            self._note_error(f"{type(exc).__name__}: {exc}")
        self._rewind(decoded.batch)
        await asyncio.sleep(REFETCH_PAUSE_SECONDS)
        return False

    async def _finish(self, decoded: _Decoded) -> bool:
        """Store, dead-letter, commit: True once past the batch, False when it was sought
        back to be fetched again."""
        started = time.perf_counter()
        batch, records = decoded.batch, decoded.records
        try:
            result, rejected = await self._store_and_dead_letter(decoded)
        except Exception as exc:
            transient = isinstance(exc, DatabaseUnavailable) or is_transient(exc)
            if not transient:
                log.exception("batch failed")
            self._note_error(f"batch not stored, will fetch it again: {_first_line(exc)}")
            if not transient and await self._gave_up_on(records, exc):
                return True
            self._rewind(batch)
            await asyncio.sleep(REFETCH_PAUSE_SECONDS)
            return False
        self._failures.clear()
        if self._isolate_records:
            self._isolate_records -= 1
        await self._store_trace_ids(records)
        if self._after_store is not None:
            await self._after_store(batch)
        await self._commit(batch)
        self.stats.batches += 1
        self.stats.events_stored += result.stored
        self.stats.duplicates += result.duplicates
        self.stats.dead_lettered += len(rejected)
        self.stats.last_batch_at = datetime.now(UTC)
        metrics.observe_batch(CONSUMER_NAME, records, rejected, result.stored, result.duplicates,
                              decoded.seconds + time.perf_counter() - started)
        return True

    async def _store_trace_ids(self, records: list[ConsumerRecord]) -> None:
        # A run's trace id is an annotation: a database that refuses it now must not
        # send the batch (and its dead letters) round again.
        try:
            await store_trace_ids(self._session_factory, records)
        except Exception as exc:
            log.warning("could not store the trace ids of a batch", extra={"error": _first_line(exc)})

    async def _store_and_dead_letter(self, decoded: _Decoded) -> tuple[StoreResult, list[Rejected]]:
        result, refused = await self._store(decoded.events)
        rejected = decoded.rejected + refused
        for item in rejected:
            await self._rule.dead_letter(item.record, item.reason)
        return result, rejected

    async def _gave_up_on(self, records: list[ConsumerRecord], exc: Exception) -> bool:
        """Count a failure of this batch; True once its one record is dead-lettered."""
        first = records[0]
        key = (TopicPartition(first.topic, first.partition), first.offset)
        self._failures[key] = failures = self._failures.get(key, 0) + 1
        if failures < self._rule.max_attempts:
            return False
        if len(records) > 1:
            self._isolate_records = len(records)
            self._failures.clear()
            return False
        try:
            await self._rule.dead_letter(first, f"handling failed {failures} times: {type(exc).__name__}: "
                                                f"{_first_line(exc)}")
        except Exception:
            return False  # the dead letter could not be sent either: keep the record
        self._failures.clear()
        await self._commit({key[0]: [first]})
        self.stats.dead_lettered += 1
        return True

    async def _store(self, decoded: Sequence[tuple[Event, ConsumerRecord]]) -> tuple[StoreResult, list[Rejected]]:
        """One transaction for the batch; if the database refuses it, one per event, so a
        single event it cannot take (say a NUL character in a text) is dead-lettered alone."""
        events = decoded.prepared if isinstance(decoded, _DecodedEvents) else [event for event, _ in decoded]
        try:
            return await self._with_db_retry(self._store_events, events), []
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
        return await self._store_in(self._session_factory, events)

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

    def _rewind(self, batch: Batch) -> None:
        if self._consumer is None:
            return
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


def _collect_less_often() -> None:
    """Raise the collector's thresholds for the whole process (never lower them)."""
    gc.set_threshold(*(max(now, wanted) for now, wanted in zip(gc.get_threshold(), GC_THRESHOLDS, strict=True)))


def _first_line(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else ""
    return (text.splitlines() or [type(exc).__name__])[0][:500]


async def _store_in_transaction(session_factory: async_sessionmaker, events: Sequence[Event]) -> StoreResult:
    async with session_factory() as session, session.begin():
        return await store_batch(session, events)
