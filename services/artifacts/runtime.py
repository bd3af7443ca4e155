"""Everything the service holds while it runs, built by its start-up task from settings."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.artifacts.database import check_schema, new_engine, new_sessionmaker
from services.artifacts.ingest.consumer import BatchConsumer
from services.artifacts.retention.job import retention_job
from services.artifacts.settings import ArtifactsSettings
from shared import topics
from shared.artifact_store import ArtifactStore
from shared.database import describe_database, normalize_database_url
from shared.events import DeadLetter
from shared.kafka import CLIENT_START_TIMEOUT_SECONDS, TopicKeeper, ensure_topics, start_producer
from shared.retention import RetentionJob
from shared.startup import Startup

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
    producer: AIOKafkaProducer | None = None
    consumer: BatchConsumer | None = None
    retention: RetentionJob | None = None
    topic_keeper: TopicKeeper | None = None

    def start_retention(self) -> None:
        """The periodic job that deletes what the RETENTION_* settings let expire."""
        self.retention = retention_job(self.settings, self.engine, self.sessions, self.store).start()

    async def start_consuming(self, startup: Startup) -> None:
        """Topics, the dead-letter producer, then the consumer. Stored runs and artifacts
        are served meanwhile; an unreachable broker is waited out, a refused idempotent
        producer (`IdempotenceRefused`) fails the start-up."""
        servers = self.settings.kafka_bootstrap_servers
        await startup.retrying(f"waiting for the broker at {servers}", lambda: ensure_topics(self.settings))
        self.topic_keeper = TopicKeeper(self.settings).start()
        await startup.retrying(f"starting the consumer on the broker at {servers}", self._connect)

    async def _connect(self) -> None:
        settings = self.settings
        producer = await start_producer(settings, client_id=CLIENT_ID)

        async def publish_dead_letter(letter: DeadLetter, key: bytes | None) -> None:
            await producer.send_and_wait(topics.DEADLETTER, letter.to_bytes(), key=key)

        consumer = BatchConsumer(
            kafka=settings,
            session_factory=self.sessions,
            publish_dead_letter=publish_dead_letter,
            group_id=settings.artifacts_consumer_group_id,
            max_records=settings.artifacts_batch_max_records,
            batch_timeout_ms=settings.artifacts_batch_timeout_ms,
            max_partition_fetch_bytes=settings.artifacts_max_partition_fetch_bytes,
            fetch_max_bytes=settings.artifacts_fetch_max_bytes,
            db_retry_seconds=settings.artifacts_db_retry_seconds,
            client_id=CLIENT_ID,
            artifact_store=self.store,
        )
        try:
            # A group join takes about half the session timeout: bound it well above that.
            async with asyncio.timeout(CLIENT_START_TIMEOUT_SECONDS + settings.kafka_session_timeout_ms / 1000):
                await consumer.start()  # stops its client itself when the start fails
        except BaseException:
            await producer.stop()
            raise
        self.producer, self.consumer = producer, consumer

    async def close(self) -> None:
        """Stops whatever was started; safe to call again."""
        if self.topic_keeper is not None:
            await self.topic_keeper.stop()
            self.topic_keeper = None
        if self.retention is not None:
            await self.retention.stop()
            self.retention = None
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        await self.engine.dispose()


async def start_runtime(settings: ArtifactsSettings, startup: Startup) -> Runtime:
    """Connect and refuse a schema that is not at head (`SchemaMismatchError`, naming
    both revisions); a database that is not reachable yet is waited out."""
    url = normalize_database_url(settings.database_url.get_secret_value())
    store = ArtifactStore.from_url(settings.artifact_store_url)
    engine = new_engine(url, timeout_seconds=settings.artifacts_db_timeout_seconds,
                        pool_size=settings.artifacts_db_pool_size, max_overflow=settings.artifacts_db_max_overflow)
    try:
        _, head = await startup.retrying(
            f"database schema check at {describe_database(url)['url']}", lambda: check_schema(engine, url)
        )
    except BaseException:
        await engine.dispose()
        raise
    return Runtime(
        settings=settings,
        database_url=url,
        engine=engine,
        sessions=new_sessionmaker(engine),
        store=store,
        schema_head=head,
    )
