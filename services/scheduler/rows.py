"""The scheduler's tables (its own Alembic migrations, version table `alembic_version_scheduler`)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

VERSION_TABLE = "alembic_version_scheduler"


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "pk": "pk_%(table_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        }
    )


class Schedule(Base):
    """One workflow's schedule: data, edited through the API."""

    __tablename__ = "schedules"
    __table_args__ = (
        CheckConstraint("misfire_policy IN ('all', 'last', 'none')", name="misfire_policy"),
        CheckConstraint("misfire_window_seconds >= 0", name="misfire_window"),
        CheckConstraint("max_active_runs IS NULL OR max_active_runs >= 1", name="max_active_runs"),
    )

    workflow_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    paused: Mapped[bool] = mapped_column(default=False)
    misfire_policy: Mapped[str] = mapped_column(String(8))
    misfire_window_seconds: Mapped[int] = mapped_column(Integer)
    max_active_runs: Mapped[int | None] = mapped_column(Integer)
    calendar: Mapped[str | None] = mapped_column(String(32))
    default_params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # Slots up to this instant have been decided (fired, skipped or queued).
    evaluated_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ScheduleSlot(Base):
    """A decided slot, a manual trigger or a backfill's run; for the ones that fire, the
    outbox of their `RunRequested`: claimed here before publishing, re-published if
    unconfirmed. The execution id is the key, so a backfill's date is claimed once."""

    __tablename__ = "schedule_slots"
    __table_args__ = (
        CheckConstraint("state IN ('queued', 'claimed', 'published', 'skipped')", name="state"),
        CheckConstraint("trigger IN ('schedule', 'manual', 'backfill')", name="trigger"),
        # the claim: one row per scheduled slot, whichever replica gets there first
        Index(
            "uq_schedule_slots_scheduled_slot", "workflow_id", "slot_at",
            unique=True, postgresql_where=text("trigger = 'schedule'"),
        ),
        Index("ix_schedule_slots_claimed_lease", "lease_until", postgresql_where=text("state = 'claimed'")),
        Index("ix_schedule_slots_queued", "workflow_id", "slot_at", postgresql_where=text("state = 'queued'")),
    )

    execution_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(128))
    trigger: Mapped[str] = mapped_column(String(16))
    # nominal time of a scheduled slot (UTC); request time of a manual trigger
    slot_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16))
    # the ledger outcome once published (fired / recovered / manual), and why
    outcome: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # the exact RunRequested value, fixed at claim time so a re-publish is identical
    event: Mapped[str | None] = mapped_column(Text)
    # the trace context published with it (W3C traceparent), the same on a re-publish
    traceparent: Mapped[str | None] = mapped_column(String(55))
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LedgerEntry(Base):
    """What happened to a slot (or a manual trigger), one row per thing that happened."""

    __tablename__ = "schedule_ledger"
    __table_args__ = (Index("ix_schedule_ledger_workflow_id_id", "workflow_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(128))
    execution_id: Mapped[str | None] = mapped_column(String(200))
    slot_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    trigger: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    recorded_by: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TrackedRun(Base):
    """Runs the scheduler requested or saw on `ibflow.runs.events`, for max_active_runs."""

    __tablename__ = "tracked_runs"
    __table_args__ = (
        CheckConstraint("status IN ('requested', 'running', 'succeeded', 'partial', 'failed')", name="status"),
        Index("ix_tracked_runs_active", "workflow_id", "updated_at",
              postgresql_where=text("status IN ('requested', 'running')")),
    )

    execution_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Backfill(Base):
    """One request to run a workflow once per trading session of a date range."""

    __tablename__ = "backfills"
    __table_args__ = (
        CheckConstraint("state IN ('active', 'released', 'cancelled')", name="state"),
        CheckConstraint("start_date <= end_date", name="range"),
        CheckConstraint("max_active_runs >= 1", name="max_active_runs"),
        Index("ix_backfills_workflow_id_created_at", "workflow_id", "created_at"),
        Index("ix_backfills_active", "created_at", postgresql_where=text("state = 'active'")),
    )

    backfill_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(128))
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    calendar: Mapped[str] = mapped_column(String(32))
    # every run's params but as_of (the schedule's defaults overridden by the request's)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    max_active_runs: Mapped[int] = mapped_column(Integer)
    # active: runs are still to be released; released: all were; cancelled: no more will be
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # the scorecard run requested once every run of the backfill has ended
    scorecard_execution_id: Mapped[str | None] = mapped_column(String(200))


class BackfillRun(Base):
    """One session of a backfill and the run that covers it."""

    __tablename__ = "backfill_runs"
    __table_args__ = (
        CheckConstraint("state IN ('queued', 'released', 'existing', 'cancelled')", name="state"),
        Index("ix_backfill_runs_queued", "backfill_id", "session_date", postgresql_where=text("state = 'queued'")),
        Index("ix_backfill_runs_execution_id", "execution_id"),
    )

    backfill_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("backfills.backfill_id", ondelete="CASCADE"), primary_key=True
    )
    session_date: Mapped[date] = mapped_column(Date, primary_key=True)
    execution_id: Mapped[str] = mapped_column(String(200))
    # queued: not requested yet; released: this backfill requested the run; existing: the
    # run had been requested before (an earlier backfill of the date), so it is followed,
    # not started again; cancelled: the backfill was cancelled before requesting it
    state: Mapped[str] = mapped_column(String(16))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RetentionLedgerEntry(Base):
    """What one retention rule removed in one sweep (services/scheduler/retention.py)."""

    __tablename__ = "scheduler_retention_ledger"
    __table_args__ = (Index("ix_scheduler_retention_ledger_started_at", "started_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # schedule_ledger, schedule_slots or tracked_runs
    target: Mapped[str] = mapped_column(String(50))
    rule: Mapped[str] = mapped_column(Text)
    cutoff: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    removed: Mapped[int] = mapped_column(BigInteger)
    removed_bytes: Mapped[int | None] = mapped_column(BigInteger)
    batches: Mapped[int] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    error: Mapped[str | None] = mapped_column(Text)
