"""Everything the service holds while it runs, built once at start-up from settings."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from faststream.kafka import KafkaBroker
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from tenacity import AsyncRetrying, RetryCallState, wait_exponential

from services.artifacts.database import check_schema, new_engine, new_sessionmaker
from services.artifacts.ingest.consumer import BatchConsumer
from services.artifacts.settings import ArtifactsSettings
from shared import topics
from shared.artifact_store import ArtifactStore
from shared.database import SchemaMismatchError, describe_database, normalize_database_url
from shared.kafka import ensure_topics, new_broker

log = logging.getLogger(__name__)
CLIENT_ID = "ibflow-artifacts"


@dataclass
class Runtime:
    settings: ArtifactsSettings
    database_url: URL
    engine: AsyncEngine
    sessions: async_sessionmaker
    store: ArtifactStore
    schema_head: str | None
    broker: KafkaBroker | None = None
    consumer: BatchConsumer | None = None
    consumer_start_error: str | None = None
    _starting: asyncio.Task | None = None

    def start_consuming(self) -> None:
        """Start the consumer in the background, retrying until the broker answers:
        stored runs and artifacts stay readable while Kafka is away."""
        self._starting = asyncio.create_task(self._start_consuming(), name="artifacts-consumer-start")

    async def _start_consuming(self) -> None:
        def note(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.consumer_start_error = f"{type(exc).__name__}: {exc}"
            log.warning("consumer not started yet, retrying: %s", self.consumer_start_error)

        async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.5, max=30.0), before_sleep=note):
            with attempt:
                await self._connect()
        self.consumer_start_error = None

    async def _connect(self) -> None:
        settings = self.settings
        await ensure_topics(settings)
        broker = new_broker(settings, client_id=CLIENT_ID)
        try:
            await broker.start()

            async def publish_dead_letter(letter, key: bytes | None) -> None:
                await broker.publish(letter.to_bytes(), topic=topics.DEADLETTER, key=key)

            consumer = BatchConsumer(
                kafka=settings,
                session_factory=self.sessions,
                publish_dead_letter=publish_dead_letter,
                group_id=settings.artifacts_consumer_group_id,
                max_records=settings.artifacts_batch_max_records,
                batch_timeout_ms=settings.artifacts_batch_timeout_ms,
                db_retry_seconds=settings.artifacts_db_retry_seconds,
                client_id=CLIENT_ID,
            )
            await consumer.start()
        except BaseException:
            await broker.stop()
            raise
        self.broker, self.consumer = broker, consumer

    async def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        if self.consumer is not None:
            await self.consumer.stop()
        if self.broker is not None:
            await self.broker.stop()
        await self.engine.dispose()


async def start_runtime(settings: ArtifactsSettings) -> Runtime:
    """Connect and refuse a schema that is not at head; then start consuming."""
    url = normalize_database_url(settings.database_url.get_secret_value())
    store = ArtifactStore.from_url(settings.artifact_store_url)
    engine = new_engine(url, timeout_seconds=settings.artifacts_db_timeout_seconds)
    try:
        _, head = await check_schema(engine, url)
    except SchemaMismatchError as exc:
        log.error("refusing to start: %s", exc, extra=describe_database(url))
        await engine.dispose()
        raise
    except Exception as exc:
        where = describe_database(url)["url"]
        log.error("refusing to start: cannot read the schema revision at %s: %s", where, exc)
        await engine.dispose()
        raise
    runtime = Runtime(
        settings=settings,
        database_url=url,
        engine=engine,
        sessions=new_sessionmaker(engine),
        store=store,
        schema_head=head,
    )
    if settings.artifacts_consumer_enabled:
        runtime.start_consuming()
    return runtime
