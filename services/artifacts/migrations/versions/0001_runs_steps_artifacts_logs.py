"""runs, run steps, run events, artifacts and log records

Revision ID: a7c1e2f40001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "a7c1e2f40001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("execution_id", sa.String(200), nullable=False),
        sa.Column("workflow_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(50), nullable=True),
        sa.Column("params", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("summary", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("planned_steps", postgresql.JSONB(), server_default="[]", nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=True),
        sa.Column("scheduled_for", TZ, nullable=True),
        sa.Column("opened_at", TZ, nullable=False),
        sa.Column("requested_at", TZ, nullable=True),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("artifact_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("log_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("stored_at", TZ, server_default=NOW, nullable=False),
        sa.Column("updated_at", TZ, server_default=NOW, nullable=False),
        sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name=op.f("ck_runs_status")),
        sa.PrimaryKeyConstraint("execution_id", name=op.f("pk_runs")),
    )
    op.create_index("idx_runs_opened_at", "runs", ["opened_at", "execution_id"])
    op.create_index("idx_runs_workflow_opened_at", "runs", ["workflow_id", "opened_at", "execution_id"])
    op.create_index("idx_runs_status", "runs", ["status"])

    op.create_table(
        "run_steps",
        sa.Column("execution_id", sa.String(200), nullable=False),
        sa.Column("step_name", sa.String(200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("artifact_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", TZ, server_default=NOW, nullable=False),
        sa.CheckConstraint("status IN ('pending', 'running', 'succeeded', 'failed')", name=op.f("ck_run_steps_status")),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["runs.execution_id"],
            name=op.f("fk_run_steps_execution_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("execution_id", "step_name", name=op.f("pk_run_steps")),
    )

    op.create_table(
        "run_events",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(50), nullable=False),
        sa.Column("workflow_id", sa.String(128), nullable=False),
        sa.Column("execution_id", sa.String(200), nullable=False),
        sa.Column("step_name", sa.String(200), nullable=True),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("body", postgresql.JSONB(), nullable=False),
        sa.Column("stored_at", TZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_run_events")),
    )
    op.create_index("idx_run_events_execution", "run_events", ["execution_id", "occurred_at"])

    op.create_table(
        "artifacts",
        sa.Column("artifact_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("media_type", sa.String(200), nullable=False),
        sa.Column("workflow_id", sa.String(128), nullable=False),
        sa.Column("execution_id", sa.String(200), nullable=False),
        sa.Column("step_name", sa.String(200), nullable=True),
        sa.Column("dag_id", sa.String(250), nullable=True),
        sa.Column("task_id", sa.String(250), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("stored_at", TZ, server_default=NOW, nullable=False),
        sa.Column("metadata", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("payload", postgresql.JSONB(none_as_null=True), nullable=True),
        sa.Column("uri", sa.String(2000), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("artifact_id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("event_id", name=op.f("uq_artifacts_event_id")),
    )
    # The old system's index names, kept (docs/architecture.md, "Database ownership").
    op.create_index("idx_artifacts_workflow_id", "artifacts", ["workflow_id"])
    op.create_index("idx_artifacts_execution_id", "artifacts", ["execution_id"])
    op.create_index("idx_artifacts_workflow_execution", "artifacts", ["workflow_id", "execution_id"])
    op.create_index("idx_artifacts_dag_id", "artifacts", ["dag_id"])
    op.create_index("idx_artifacts_step_name", "artifacts", ["step_name"])
    op.create_index("idx_artifacts_created_at", "artifacts", ["created_at", "artifact_id"])
    op.create_index("idx_artifacts_kind", "artifacts", ["kind"])

    op.create_table(
        "log_records",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("workflow_id", sa.String(128), nullable=False),
        sa.Column("execution_id", sa.String(200), nullable=False),
        sa.Column("step_name", sa.String(200), nullable=True),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("level_no", sa.SmallInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("logger", sa.String(200), nullable=True),
        sa.Column("fields", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("stored_at", TZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_records")),
        sa.UniqueConstraint("event_id", name=op.f("uq_log_records_event_id")),
    )
    op.create_index("idx_log_records_execution_time", "log_records", ["execution_id", "occurred_at", "id"])
    op.create_index("idx_log_records_execution_id", "log_records", ["execution_id", "id"])


def downgrade() -> None:
    op.drop_table("log_records")
    op.drop_table("artifacts")
    op.drop_table("run_events")
    op.drop_table("run_steps")
    op.drop_table("runs")
