"""The `ibflow.runs.events` consumer: keeps `tracked_runs` current for max_active_runs."""

from __future__ import annotations

import asyncio
import logging

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import run_tracking
from services.scheduler.clock import Clock
from services.scheduler.settings import SchedulerSettings
from shared import topics
from shared.events import RUN_LIFECYCLE_EVENTS, DeadLetter, EventDecodeError, decode_event
from shared.kafka import consumer_options

log = logging.getLogger(__name__)

CONSUMER_GROUP = "ibflow-scheduler"
CONSUMER_NAME = "scheduler.run_events"
# A database error re-delivers the event (nack); this pause keeps that from spinning.
RETRY_PAUSE_SECONDS = 1.0


def subscribe_run_events(
    broker: KafkaBroker, settings: SchedulerSettings, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> None:
    @broker.subscriber(
        topics.RUNS_EVENTS, **consumer_options(settings, group_id=CONSUMER_GROUP), ack_policy=AckPolicy.NACK_ON_ERROR
    )
    async def on_run_event(message: KafkaMessage) -> None:
        record = message.raw_message
        try:
            event = decode_event(message.body, expected=RUN_LIFECYCLE_EVENTS)
        except EventDecodeError as exc:
            log.warning("dead-lettering an undecodable run event", extra={"reason": str(exc)})
            dead = DeadLetter.of(
                consumer=CONSUMER_NAME, topic=record.topic, value=message.body, reason=str(exc),
                partition=record.partition, offset=record.offset, key=record.key,
            )
            await broker.publish(dead.to_bytes(), topic=topics.DEADLETTER, key=record.key)
            return
        try:
            async with sessions.begin() as session:
                await run_tracking.apply_run_event(session, event, now=clock.now())
        except SQLAlchemyError:
            log.exception("could not record a run event; it will be delivered again",
                          extra={"execution_id": event.execution_id})
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            raise
