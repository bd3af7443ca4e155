"""Database rows of the artifacts service (SQLAlchemy 2 declarative, `Mapped[...]`).

The `artifacts` table keeps the old system's name, columns and index names
(docs/architecture.md): tools and people query them directly.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# `external`: only artifacts or logs arrived, from a producer outside ibflow; no
# run.requested or run.started says ibflow ran it. (`abandoned` is not stored: the API
# derives it from `last_event_at`, so the next event of such a run revives it.)
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "partial", "external")
# A step of an external run is `external`: only its artifacts or logs are known.
STEP_STATUSES = ("pending", "running", "succeeded", "failed", "skipped", "external")
# A run's outcomes: the workflow reached an end.
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "partial"})
# Steps that will not move any more in this attempt.
FINISHED_STEP_STATUSES = frozenset({"succeeded", "failed", "skipped"})

# Names Alembic and PostgreSQL use for constraints, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        list[str]: JSONB,
        uuid.UUID: UUID(as_uuid=True),
    }


class Run(Base):
    """One execution of a workflow, assembled from whatever events arrived for it."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        Index("idx_runs_opened_at", "opened_at", "execution_id"),
        Index("idx_runs_workflow_opened_at", "workflow_id", "opened_at", "execution_id"),
        # Each filter of the runs list, then the list's order: a page and a capped total
        # read only their own index entries.
        Index("idx_runs_status_opened", "status", "opened_at", "execution_id"),
        Index("idx_runs_trigger_opened", "trigger", "opened_at", "execution_id"),
    )

    execution_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str | None] = mapped_column(String(50))
    params: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    summary: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    planned_steps: Mapped[list[str]] = mapped_column(server_default="[]")
    requested_by: Mapped[str | None] = mapped_column(String(200))
    scheduled_for: Mapped[datetime | None]
    # The earliest occurred_at of any event of the run: its place in time, never null,
    # so lists can page on it even before run.requested or run.started arrives.
    opened_at: Mapped[datetime]
    requested_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # What failed in a run that still reached its end: [{item, step, reason, code}].
    failed_items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    # The latest occurred_at of any event of the run: a run that stays quiet too long is
    # shown as abandoned.
    last_event_at: Mapped[datetime | None]
    # Kept by the consumer: each event is stored exactly once, so counting inserts is exact
    # and a list of runs needs no count over 50,000 log records.
    artifact_count: Mapped[int] = mapped_column(Integer, server_default="0")
    log_count: Mapped[int] = mapped_column(Integer, server_default="0")
    # The W3C trace id of the trigger (its `traceparent` on the run's records), if any.
    trace_id: Mapped[str | None] = mapped_column(String(32))
    stored_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    steps: Mapped[list[RunStep]] = relationship(
        back_populates="run", order_by="RunStep.position", cascade="all, delete-orphan"
    )


class RunStep(Base):
    __tablename__ = "run_steps"
    __table_args__ = (
        CheckConstraint(_in("status", STEP_STATUSES), name="status"),
        ForeignKeyConstraint(["execution_id"], ["runs.execution_id"], ondelete="CASCADE"),
    )

    execution_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    step_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    # Order of the step in the workflow (from run.started), else the order first seen.
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, server_default="0")
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # Why a skipped step did not run (an earlier step failed).
    skipped_reason: Mapped[str | None] = mapped_column(Text)
    artifact_count: Mapped[int] = mapped_column(Integer, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    run: Mapped[Run] = relationship(back_populates="steps")


class RunEvent(Base):
    """Every lifecycle event stored, once: the dedupe key for run and step updates."""

    __tablename__ = "run_events"
    __table_args__ = (Index("idx_run_events_execution", "execution_id", "occurred_at"),)

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    event_type: Mapped[str] = mapped_column(String(50))
    workflow_id: Mapped[str] = mapped_column(String(128))
    execution_id: Mapped[str] = mapped_column(String(200))
    step_name: Mapped[str | None] = mapped_column(String(200))
    occurred_at: Mapped[datetime]
    body: Mapped[dict[str, Any]]
    stored_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (
        Index("idx_artifacts_workflow_id", "workflow_id"),
        Index("idx_artifacts_execution_id", "execution_id"),
        Index("idx_artifacts_workflow_execution", "workflow_id", "execution_id"),
        Index("idx_artifacts_dag_id", "dag_id"),
        Index("idx_artifacts_step_name", "step_name"),
        Index("idx_artifacts_created_at", "created_at", "artifact_id"),
        # Each filter of the list (and the usual pairs), then the list's order: a page and
        # a capped total read only their own index entries, at any size of the table.
        Index("idx_artifacts_workflow_created", "workflow_id", "created_at", "artifact_id"),
        Index("idx_artifacts_workflow_step_created", "workflow_id", "step_name", "created_at", "artifact_id"),
        Index("idx_artifacts_workflow_kind_created", "workflow_id", "kind", "created_at", "artifact_id"),
        Index("idx_artifacts_step_created", "step_name", "created_at", "artifact_id"),
        Index("idx_artifacts_kind_created", "kind", "created_at", "artifact_id"),
        Index("idx_artifacts_dag_created", "dag_id", "created_at", "artifact_id",
              postgresql_where=text("dag_id IS NOT NULL")),
        Index("idx_artifacts_dag_task_created", "dag_id", "task_id", "created_at", "artifact_id",
              postgresql_where=text("dag_id IS NOT NULL")),
        Index("idx_artifacts_task_created", "task_id", "created_at", "artifact_id",
              postgresql_where=text("task_id IS NOT NULL")),
    )

    artifact_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(50))
    media_type: Mapped[str] = mapped_column(String(200))
    workflow_id: Mapped[str] = mapped_column(String(128))
    execution_id: Mapped[str] = mapped_column(String(200))
    step_name: Mapped[str | None] = mapped_column(String(200))
    dag_id: Mapped[str | None] = mapped_column(String(250))
    task_id: Mapped[str | None] = mapped_column(String(250))
    # When the producer made it (the event's occurred_at); stored_at is when it got here.
    created_at: Mapped[datetime]
    stored_at: Mapped[datetime] = mapped_column(server_default=func.now())
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", server_default="{}")
    payload: Mapped[Any | None] = mapped_column(JSONB(none_as_null=True))
    uri: Mapped[str | None] = mapped_column(String(2000))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))


LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class LogRecord(Base):
    __tablename__ = "log_records"
    __table_args__ = (
        # Keyset pagination of one run's logs in time order: a first page of a run with
        # 50,000 records reads a few index entries, not the whole run.
        Index("idx_log_records_execution_time", "execution_id", "occurred_at", "id"),
        # Live follow reads "this run's records after id N".
        Index("idx_log_records_execution_id", "execution_id", "id"),
        # Text search (ILIKE '%...%') finds a rare text's lines by trigram instead of
        # reading every line of the run.
        Index("idx_log_records_message_trgm", "message", postgresql_using="gin",
              postgresql_ops={"message": "gin_trgm_ops"}),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    workflow_id: Mapped[str] = mapped_column(String(128))
    execution_id: Mapped[str] = mapped_column(String(200))
    step_name: Mapped[str | None] = mapped_column(String(200))
    occurred_at: Mapped[datetime]
    level: Mapped[str] = mapped_column(String(10))
    # The level as a number, so "at least WARNING" is a comparison.
    level_no: Mapped[int] = mapped_column(SmallInteger)
    message: Mapped[str] = mapped_column(Text)
    logger: Mapped[str | None] = mapped_column(String(200))
    fields: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    stored_at: Mapped[datetime] = mapped_column(server_default=func.now())


class RetentionLedgerEntry(Base):
    """What one retention rule removed in one sweep (services/artifacts/retention/)."""

    __tablename__ = "artifacts_retention_ledger"
    __table_args__ = (Index("idx_artifacts_retention_ledger_started", "started_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    # log_records, artifacts or blobs
    target: Mapped[str] = mapped_column(String(50))
    # The rule in words, with its settings: "older than 30 days, ...".
    rule: Mapped[str] = mapped_column(Text)
    cutoff: Mapped[datetime | None]
    removed: Mapped[int] = mapped_column(BigInteger)
    removed_bytes: Mapped[int | None] = mapped_column(BigInteger)
    batches: Mapped[int] = mapped_column(Integer)
    # Counts per kind or per run, a sample of what went.
    detail: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    error: Mapped[str | None] = mapped_column(Text)
