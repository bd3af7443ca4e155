"""One rule for every consumer of an ibflow topic.

Whatever bytes arrive, a record is either handled or dead-lettered with a readable
reason, once, and the consumer moves on:

- bytes that are not a valid, bounded event of the topic: dead-lettered at once;
- a handler that fails for a passing reason (the database or the broker is away):
  the consumer waits with backoff and tries the same record again, losing nothing;
- a handler that fails for any other reason: tried `max_attempts` times, then the
  record is dead-lettered alone with the last error, so it cannot wedge the topic.

The artifacts service's batch loop and the FastStream subscribers of the scheduler and
signals services all use `ConsumerRule`; only the shape of their loop differs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from sqlalchemy.exc import DBAPIError

from shared.event_bounds import DEFAULT_MAX_FUTURE_SKEW
from shared.events import DeadLetter, Event, EventDecodeError, decode_event
from shared.metrics import count_events

log = logging.getLogger(__name__)

# PostgreSQL error classes worth waiting out: connection, rollback (serialization,
# deadlock), resources, operator intervention (shutdown, starting up), system errors.
_TRANSIENT_SQLSTATE_CLASSES = {"08", "40", "53", "57", "58"}


class Record(Protocol):
    """What the rule reads of a Kafka record (aiokafka's `ConsumerRecord` has it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Rejected:
    record: Record
    reason: str


PublishDeadLetter = Callable[[DeadLetter, bytes | None], Awaitable[Any]]
Handler = Callable[[Event], Awaitable[Any]]


async def keep_bytes(message: Any) -> bytes:
    """A FastStream `decoder` that leaves a record's body as it arrived.

    FastStream's own decoder parses JSON before any handler runs and lets a
    RecursionError (a 5,000-deep value) or ValueError (a 5,000-digit integer) escape, so
    the record would be retried forever; the rule must be the first to read the bytes.
    """
    return message.body


def is_transient(exc: BaseException) -> bool:
    """A failure that trying the same record again later can get past."""
    if isinstance(exc, OSError | TimeoutError | KafkaConnectionError | KafkaTimeoutError):
        return True
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False))
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return sqlstate is not None and sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return False


@dataclass
class ConsumerStatus:
    """What `/health` shows of a consumer."""

    handled: int = 0
    dead_lettered: int = 0
    waiting_since: datetime | None = None
    waiting_for: str | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None

    def note_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = datetime.now(UTC)


class ConsumerRule:
    def __init__(
        self,
        *,
        consumer: str,
        expected: Mapping[str, tuple[type[Event], ...]],
        publish_dead_letter: PublishDeadLetter,
        max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
        max_attempts: int = 3,
        retry_pause_seconds: float = 0.5,
        max_wait_seconds: float = 5.0,
        transient_patience_seconds: float = 120.0,
    ) -> None:
        self.consumer = consumer
        self._expected = expected
        self._publish_dead_letter = publish_dead_letter
        self._max_future_skew = max_future_skew
        self.max_attempts = max_attempts
        self._retry_pause = retry_pause_seconds
        self._max_wait = max_wait_seconds
        self._patience = transient_patience_seconds
        self.status = ConsumerStatus()

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._expected)

    def decode(self, record: Record) -> Event | Rejected:
        """The event a record holds, or why it cannot be taken. Never raises."""
        if record.value is None:
            return Rejected(record, "record has no value")
        expected = self._expected.get(record.topic)
        if expected is None:
            return Rejected(record, f"{self.consumer} does not consume {record.topic}")
        try:
            return decode_event(record.value, expected=expected, max_future_skew=self._max_future_skew)
        except EventDecodeError as exc:
            return Rejected(record, str(exc))
        except Exception as exc:  # decode_event is bounded; this is the guarantee, not the plan
            log.exception("decoding a record failed unexpectedly", extra=_where(record))
            return Rejected(record, f"could not be decoded: {type(exc).__name__}")

    async def dead_letter(self, record: Record, reason: str) -> DeadLetter:
        letter = DeadLetter.of(
            consumer=self.consumer, topic=record.topic, value=record.value, reason=reason,
            partition=record.partition, offset=record.offset, key=record.key,
        )
        await self._publish_dead_letter(letter, record.key)
        self.status.dead_lettered += 1
        count_events(self.consumer, record.topic, "dead_lettered")
        log.warning("dead-lettered a record", extra={**_where(record), "reason": reason,
                                                      "dead_letter_id": str(letter.dead_letter_id)})
        return letter

    async def handle(self, record: Record, handler: Handler) -> Event | None:
        """Decode one record and hand it to `handler`, under the rule above.

        Returns the event once handled, None once dead-lettered. Raises only when a
        passing failure outlasts the patience (or the dead letter cannot be sent): the
        caller must then leave the record uncommitted, to be delivered again.
        """
        outcome = self.decode(record)
        if isinstance(outcome, Rejected):
            await self.dead_letter(record, outcome.reason)
            return None
        failures = waits = 0
        waiting_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await handler(outcome)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {_first_line(exc)}"
                self.status.note_error(reason)
                if is_transient(exc):
                    waiting_since = waiting_since or loop.time()
                    self._waiting(reason)
                    if loop.time() - waiting_since > self._patience:
                        raise
                    await asyncio.sleep(min(self._max_wait, self._retry_pause * 2 ** min(waits, 6)))
                    waits += 1
                    continue
                failures += 1
                if failures >= self.max_attempts:
                    log.error("a record failed every attempt; dead-lettering it",
                              extra={**_where(record), "attempts": failures, "error": reason})
                    self._resumed()
                    await self.dead_letter(record, f"handling failed {failures} times: {reason}")
                    return None
                log.warning("handling a record failed; trying it again",
                            extra={**_where(record), "attempt": failures, "error": reason})
                await asyncio.sleep(self._retry_pause * failures)
                continue
            self._resumed()
            self.status.handled += 1
            count_events(self.consumer, record.topic, "handled")
            return outcome

    def _waiting(self, reason: str) -> None:
        if self.status.waiting_since is None:
            self.status.waiting_since = datetime.now(UTC)
            log.warning("consumer paused until this passes", extra={"consumer": self.consumer, "reason": reason})
        self.status.waiting_for = reason

    def _resumed(self) -> None:
        if self.status.waiting_since is not None:
            log.info("consumer resumed", extra={"consumer": self.consumer})
        self.status.waiting_since = None
        self.status.waiting_for = None


def _where(record: Record) -> dict[str, Any]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:500]
