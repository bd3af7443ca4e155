"""Scheduler settings, built at start-up from the environment (and `.env`)."""

from __future__ import annotations

import os
import socket

from pydantic import Field

from services.scheduler.retention import SchedulerRetentionSettings
from shared.settings import DatabaseSettings, HttpSettings, KafkaSettings


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class SchedulerSettings(KafkaSettings, DatabaseSettings, HttpSettings, SchedulerRetentionSettings):
    # Seed the default workflow's schedule on first start only; the API owns it after that.
    workflow_schedule: str = "0 9 * * 1-5"
    workflow_timezone: str = "America/New_York"
    watchlist: str = "AAPL,MSFT,IBM,GOOG"
    # Names this replica in claims and ledger entries.
    scheduler_instance_id: str = Field(default_factory=_default_instance_id, min_length=1, max_length=200)
    # How often the loop looks at the schedules: API edits take effect within one tick.
    scheduler_tick_seconds: float = Field(default=1.0, gt=0, le=60)
    # A slot evaluated later than this after its time was missed (downtime): the
    # schedule's misfire policy decides what happens to it.
    scheduler_misfire_grace_seconds: float = Field(default=60.0, ge=0)
    # A claimed slot whose publication nobody confirmed within this is re-published
    # by any replica (same execution_id and event_id, so consumers deduplicate).
    scheduler_publish_lease_seconds: float = Field(default=30.0, gt=0)
    # A run that was requested or started but never reported an end stops counting
    # against max_active_runs after this long.
    scheduler_active_run_timeout_seconds: float = Field(default=6 * 3600.0, gt=0)
    # After longer downtime, slots older than this are summarised in one ledger entry
    # instead of being evaluated one by one.
    scheduler_max_lookback_seconds: float = Field(default=7 * 86400.0, gt=0)

    def watchlist_symbols(self) -> list[str]:
        return [s.strip().upper() for s in self.watchlist.split(",") if s.strip()]
