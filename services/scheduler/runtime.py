"""What one running scheduler holds, wired once by `main.create_app`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from alembic.config import Config
from faststream.kafka import KafkaBroker
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.scheduler.clock import Clock
from services.scheduler.outbox import RunRequestOutbox
from services.scheduler.retention import retention_job
from services.scheduler.scheduling_loop import SchedulingLoop
from services.scheduler.settings import SchedulerSettings
from shared.kafka import TopicKeeper
from shared.retention import RetentionJob


@dataclass
class SchedulerRuntime:
    settings: SchedulerSettings
    database_url: URL
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    alembic: Config
    clock: Clock
    broker: KafkaBroker
    outbox: RunRequestOutbox
    loop: SchedulingLoop
    loop_task: asyncio.Task | None = field(default=None)
    retention: RetentionJob | None = field(default=None)
    topic_keeper: TopicKeeper | None = field(default=None)

    def start_retention(self) -> None:
        """The periodic job that deletes what RETENTION_SCHEDULER_DAYS lets expire."""
        self.retention = retention_job(self.settings, self.engine, self.sessions).start()

    async def stop_retention(self) -> None:
        if self.retention is not None:
            await self.retention.stop()
            self.retention = None
