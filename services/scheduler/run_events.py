"""The `ibflow.runs.events` consumer: keeps `tracked_runs` current for max_active_runs."""

from __future__ import annotations

from datetime import timedelta

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import run_tracking
from services.scheduler.clock import Clock
from services.scheduler.settings import SchedulerSettings
from shared import topics
from shared.consuming import ConsumerRule, keep_bytes
from shared.events import DeadLetter, Event, events_of
from shared.kafka import consumer_options

CONSUMER_GROUP = "ibflow-scheduler"
CONSUMER_NAME = "scheduler.run_events"


def subscribe_run_events(
    broker: KafkaBroker, settings: SchedulerSettings, sessions: async_sessionmaker[AsyncSession], clock: Clock
) -> ConsumerRule:
    async def publish_dead_letter(letter: DeadLetter, key: bytes | None) -> None:
        await broker.publish(letter.to_bytes(), topic=topics.DEADLETTER, key=key)

    rule = ConsumerRule(
        consumer=CONSUMER_NAME,
        expected={topics.RUNS_EVENTS: events_of(topics.RUNS_EVENTS)},
        publish_dead_letter=publish_dead_letter,
        max_future_skew=timedelta(seconds=settings.event_max_future_skew_seconds),
        max_attempts=settings.consumer_max_attempts,
    )

    async def record_run_event(event: Event) -> None:
        async with sessions.begin() as session:
            await run_tracking.apply_run_event(session, event, now=clock.now())

    # The rule waits out a database outage in place and dead-letters what fails for
    # good; only an outage longer than its patience raises, and then the nack makes
    # the broker deliver the same event again.
    @broker.subscriber(
        topics.RUNS_EVENTS, **consumer_options(settings, group_id=CONSUMER_GROUP), ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=keep_bytes,
    )
    async def on_run_event(message: KafkaMessage) -> None:
        await rule.handle(message.raw_message, record_run_event)

    return rule
