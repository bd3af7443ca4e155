"""Where `RunRequested` values go: `ibflow.runs.requested`, keyed by execution id."""

from __future__ import annotations

from typing import Protocol

from faststream.kafka import KafkaBroker

from shared import topics


class RunPublisher(Protocol):
    async def publish(self, key: bytes, value: bytes) -> None:
        """Return only once the broker has acknowledged the record."""
        ...


class KafkaRunPublisher:
    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def publish(self, key: bytes, value: bytes) -> None:
        await self._broker.publish(value, topic=topics.RUNS_REQUESTED, key=key)
