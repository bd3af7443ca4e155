"""schedules, schedule_slots, schedule_ledger, tracked_runs

Revision ID: sched_0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "sched_0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("workflow_id", sa.String(128), nullable=False),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("misfire_policy", sa.String(8), nullable=False),
        sa.Column("misfire_window_seconds", sa.Integer(), nullable=False),
        sa.Column("max_active_runs", sa.Integer(), nullable=True),
        sa.Column("calendar", sa.String(32), nullable=True),
        sa.Column("default_params", JSONB(), nullable=False),
        sa.Column("evaluated_until", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", name="pk_schedules"),
        sa.CheckConstraint("misfire_policy IN ('all', 'last', 'none')", name="ck_schedules_misfire_policy"),
        sa.CheckConstraint("misfire_window_seconds >= 0", name="ck_schedules_misfire_window"),
        sa.CheckConstraint("max_active_runs IS NULL OR max_active_runs >= 1", name="ck_schedules_max_active_runs"),
    )
    op.create_table(
        "schedule_slots",
        sa.Column("execution_id", sa.String(200), nullable=False),
        sa.Column("workflow_id", sa.String(128), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("slot_at", TS, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("params", JSONB(), nullable=False),
        sa.Column("event", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("claimed_at", TS, nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("published_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("execution_id", name="pk_schedule_slots"),
        sa.CheckConstraint("state IN ('queued', 'claimed', 'published', 'skipped')", name="ck_schedule_slots_state"),
        sa.CheckConstraint("trigger IN ('schedule', 'manual')", name="ck_schedule_slots_trigger"),
    )
    op.create_index(
        "uq_schedule_slots_scheduled_slot", "schedule_slots", ["workflow_id", "slot_at"],
        unique=True, postgresql_where=sa.text("trigger = 'schedule'"),
    )
    op.create_index(
        "ix_schedule_slots_claimed_lease", "schedule_slots", ["lease_until"],
        postgresql_where=sa.text("state = 'claimed'"),
    )
    op.create_index(
        "ix_schedule_slots_queued", "schedule_slots", ["workflow_id", "slot_at"],
        postgresql_where=sa.text("state = 'queued'"),
    )
    op.create_table(
        "schedule_ledger",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("workflow_id", sa.String(128), nullable=False),
        sa.Column("execution_id", sa.String(200), nullable=True),
        sa.Column("slot_at", TS, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_ledger"),
    )
    op.create_index("ix_schedule_ledger_workflow_id_id", "schedule_ledger", ["workflow_id", "id"])
    op.create_table(
        "tracked_runs",
        sa.Column("execution_id", sa.String(200), nullable=False),
        sa.Column("workflow_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("execution_id", name="pk_tracked_runs"),
        sa.CheckConstraint("status IN ('requested', 'running', 'succeeded', 'failed')", name="ck_tracked_runs_status"),
    )
    op.create_index(
        "ix_tracked_runs_active", "tracked_runs", ["workflow_id", "updated_at"],
        postgresql_where=sa.text("status IN ('requested', 'running')"),
    )


def downgrade() -> None:
    op.drop_table("tracked_runs")
    op.drop_table("schedule_ledger")
    op.drop_table("schedule_slots")
    op.drop_table("schedules")
