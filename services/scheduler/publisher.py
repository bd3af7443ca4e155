"""Where `RunRequested` values go: `ibflow.runs.requested`, keyed by execution id."""

from __future__ import annotations

from typing import Protocol

from faststream.kafka import KafkaBroker

from shared import topics
from shared.tracing import kafka_headers


class RunPublisher(Protocol):
    async def publish(self, key: bytes, value: bytes, *, traceparent: str | None = None) -> None:
        """Return only once the broker has acknowledged the record; `traceparent` goes
        in the record's headers."""
        ...


class KafkaRunPublisher:
    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def publish(self, key: bytes, value: bytes, *, traceparent: str | None = None) -> None:
        await self._broker.publish(value, topic=topics.RUNS_REQUESTED, key=key, headers=kafka_headers(traceparent))
