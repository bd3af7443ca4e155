"""Kafka plumbing: producers and brokers that start cleanly or not at all, consumer
options, topic creation, broker probe.

Works on Apache Kafka and on the tansu broker of the dev stack; what differs between
them is settings, not code (see `KafkaSettings`).

Every client started here is stopped on every path that does not hand it to the
caller: a failed, timed-out or cancelled start leaves nothing open (aiokafka warns
"Unclosed AIOKafkaProducer" about a producer whose `start` raised and that nobody
stopped, and FastStream's `KafkaBroker.start` does exactly that with its producer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
)
from faststream.kafka import KafkaBroker

from shared.health import ComponentHealth
from shared.settings import KafkaSettings
from shared.topics import ALL_TOPICS

log = logging.getLogger(__name__)

# A producer that bootstrapped and then lost the broker waits for its producer id
# forever; past this a start counts as failed (and is retried as an outage).
CLIENT_START_TIMEOUT_SECONDS = 30.0
# Records that arrive within this many milliseconds travel in one request.
LINGER_MS = 5


class IdempotenceRefused(RuntimeError):
    """The broker starts a plain producer but refuses an idempotent one.

    The answer is the same on every try (tansu answers `InitProducerId` with
    `UnknownError`; a Kafka cluster whose ACLs lack IdempotentWrite answers
    `ClusterAuthorizationFailed`), so a service stops on it instead of retrying.
    """

    def __init__(self, bootstrap_servers: str, cause: BaseException) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.cause = type(cause).__name__
        super().__init__(
            f"the Kafka broker at {bootstrap_servers} refuses idempotent producers "
            f"(InitProducerId answered {self.cause}) but accepts plain ones: set "
            "KAFKA_ENABLE_IDEMPOTENCE=false for this broker (tansu, the dev stack's broker, cannot do "
            "idempotence), or grant idempotent writes on it; keep it true on Apache Kafka"
        )


def is_broker_outage(exc: BaseException) -> bool:
    """A failure that waiting for the broker can get past (it is down, starting, far)."""
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError | NodeNotReadyError | RequestTimedOutError):
        return True
    if isinstance(exc, KafkaError):
        return exc.retriable
    return isinstance(exc, OSError | TimeoutError)


class _Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def start_or_stop(client: _Startable, timeout: float = CLIENT_START_TIMEOUT_SECONDS) -> None:
    """Start an aiokafka client or a FastStream broker; if that fails, times out or is
    cancelled, stop it before the error goes on."""
    try:
        async with asyncio.timeout(timeout):
            await client.start()
    except BaseException:
        await client.stop()
        raise


def producer_options(settings: KafkaSettings, *, client_id: str) -> dict[str, Any]:
    """What every ibflow producer is built with, FastStream's and plain ones alike."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": client_id,
        "enable_idempotence": settings.kafka_enable_idempotence,
        "linger_ms": LINGER_MS,
    }


async def start_producer(settings: KafkaSettings, *, client_id: str, **options: Any) -> AIOKafkaProducer:
    """A started producer, or an error with nothing left open.

    A broker that refuses idempotent producing while `KAFKA_ENABLE_IDEMPOTENCE` is on
    raises `IdempotenceRefused`, and the service stops on it. It does not fall back to
    plain producing: idempotence is a delivery guarantee the operator asked for (and
    the default for Kafka); quietly dropping it on a production cluster whose ACLs
    lack it would hide a misconfiguration, while the fix for a broker that cannot do
    it at all (tansu) is the one variable the message names.
    """
    producer = AIOKafkaProducer(**producer_options(settings, client_id=client_id) | options)
    try:
        await start_or_stop(producer)
    except KafkaError as exc:
        if settings.kafka_enable_idempotence and not is_broker_outage(exc) and await _plain_producer_starts(settings):
            raise IdempotenceRefused(settings.kafka_bootstrap_servers, exc) from exc
        raise
    return producer


async def _plain_producer_starts(settings: KafkaSettings) -> bool:
    """Whether the broker starts a producer without idempotence: tells a refusal of
    idempotence apart from a broker that refuses producers altogether."""
    producer = AIOKafkaProducer(
        **producer_options(settings, client_id="ibflow-idempotence-check") | {"enable_idempotence": False}
    )
    try:
        await start_or_stop(producer)
    except Exception:
        return False
    await producer.stop()
    return True


async def check_producing(settings: KafkaSettings, *, client_id: str) -> None:
    """Start and stop one producer with the service's settings: an unreachable broker
    or a refused idempotent producer raises here, with nothing left open."""
    producer = await start_producer(settings, client_id=client_id)
    await producer.stop()


def new_broker(settings: KafkaSettings, *, client_id: str, **options: Any) -> KafkaBroker:
    producer = producer_options(settings, client_id=client_id)
    return KafkaBroker(producer.pop("bootstrap_servers"), **producer, **options)


async def start_broker(broker: KafkaBroker, settings: KafkaSettings, *, client_id: str) -> None:
    """Start a FastStream broker, or raise with nothing left open.

    FastStream builds its producer inside `start` and keeps no reference to it when
    its start fails, so nobody could stop it: a plain producer with the same settings
    goes first and meets an unreachable broker or a refused idempotent producer
    itself. What can still fail after it (the broker vanishing in between, a
    subscriber) is stopped through the broker.
    """
    await check_producing(settings, client_id=client_id)
    await start_or_stop(broker)


def consumer_options(settings: KafkaSettings, *, group_id: str) -> dict[str, Any]:
    """Subscriber options every ibflow consumer shares (docs/broker-notes.md, rules 2-4 and 8)."""
    return {
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
    }


async def ensure_topics(settings: KafkaSettings, topics: Iterable[str] = ALL_TOPICS) -> list[str]:
    """Create missing topics explicitly: auto-creation picks its own partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, client_id="ibflow-admin")
    try:
        async with asyncio.timeout(CLIENT_START_TIMEOUT_SECONDS):
            await admin.start()
            existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        for topic in missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            topic,
                            num_partitions=settings.kafka_topic_partitions,
                            replication_factor=settings.kafka_replication_factor,
                        )
                    ]
                )
            except TopicAlreadyExistsError:
                pass
        if missing:
            log.info("created topics", extra={"topics": missing})
        return missing
    finally:
        await admin.close()


class TopicKeeper:
    """Re-creates ibflow's topics when the broker has lost them.

    A memory broker (the dev stack's tansu) comes back from a restart with no topics at
    all. The clients reconnect by themselves, but then wait for ever on topics nobody
    re-creates: every service checks, one metadata request every `interval` seconds.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._task: asyncio.Task | None = None

    def start(self) -> TopicKeeper:
        self._task = asyncio.create_task(self._run(), name="ibflow-topic-keeper")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.kafka_topic_check_seconds)
            try:
                created = await ensure_topics(self._settings)
            except Exception as exc:  # the broker away: the clients say so; look again later
                log.debug("topic check failed: %r", exc)
                continue
            if created:
                log.warning("the broker had lost topics and they were created again (did a memory broker restart?)",
                            extra={"topics": created})


async def probe_broker(settings: KafkaSettings, timeout: float = 3.0) -> ComponentHealth:
    detail = {"bootstrap_servers": settings.kafka_bootstrap_servers}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="ibflow-health",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            topics = await admin.list_topics()
        missing = [t for t in ALL_TOPICS if t not in topics]
        if missing:
            return ComponentHealth(status="degraded", detail=detail, error=f"missing topics: {', '.join(missing)}")
        return ComponentHealth(status="ok", detail=detail)
    except (KafkaError, OSError, TimeoutError) as exc:
        return ComponentHealth(status="unhealthy", detail=detail, error=f"broker unreachable: {type(exc).__name__}")
    finally:
        await admin.close()
