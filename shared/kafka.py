"""Kafka plumbing: broker factory, consumer options, topic creation, broker probe.

Works on Apache Kafka and on the tansu broker of the dev stack; what differs between
them is settings, not code (see `KafkaSettings`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from shared.health import ComponentHealth
from shared.settings import KafkaSettings
from shared.topics import ALL_TOPICS

log = logging.getLogger(__name__)


def new_broker(settings: KafkaSettings, *, client_id: str, **options: Any) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=client_id,
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=5,
        **options,
    )


def consumer_options(settings: KafkaSettings, *, group_id: str) -> dict[str, Any]:
    """Subscriber options every ibflow consumer shares (BROKER-NOTES rules 2-4, 6)."""
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
    await admin.start()
    try:
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
