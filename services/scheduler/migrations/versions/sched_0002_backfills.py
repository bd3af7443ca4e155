"""backfills, backfill_runs; 'backfill' runs in the outbox; 'partial' tracked runs

Revision ID: sched_0002
Revises: sched_0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "sched_0002"
down_revision = "sched_0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(name, table, type_="check")
    op.create_check_constraint(name, table, condition)


def upgrade() -> None:
    _replace_check("schedule_slots", "ck_schedule_slots_trigger", "trigger IN ('schedule', 'manual', 'backfill')")
    _replace_check("tracked_runs", "ck_tracked_runs_status",
                   "status IN ('requested', 'running', 'succeeded', 'partial', 'failed')")
    op.create_table(
        "backfills",
        sa.Column("backfill_id", sa.String(64), nullable=False),
        sa.Column("workflow_id", sa.String(128), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("calendar", sa.String(32), nullable=False),
        sa.Column("params", JSONB(), nullable=False),
        sa.Column("max_active_runs", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("cancelled_at", TS, nullable=True),
        sa.Column("scorecard_execution_id", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("backfill_id", name="pk_backfills"),
        sa.CheckConstraint("state IN ('active', 'released', 'cancelled')", name="ck_backfills_state"),
        sa.CheckConstraint("start_date <= end_date", name="ck_backfills_range"),
        sa.CheckConstraint("max_active_runs >= 1", name="ck_backfills_max_active_runs"),
    )
    op.create_index("ix_backfills_workflow_id_created_at", "backfills", ["workflow_id", "created_at"])
    op.create_index("ix_backfills_active", "backfills", ["created_at"], postgresql_where=sa.text("state = 'active'"))
    op.create_table(
        "backfill_runs",
        sa.Column("backfill_id", sa.String(64), nullable=False),
        sa.Column("session_date", sa.Date(), nullable=False),
        sa.Column("execution_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("released_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("backfill_id", "session_date", name="pk_backfill_runs"),
        sa.ForeignKeyConstraint(["backfill_id"], ["backfills.backfill_id"], ondelete="CASCADE",
                                name="fk_backfill_runs_backfill_id_backfills"),
        sa.CheckConstraint("state IN ('queued', 'released', 'existing', 'cancelled')", name="ck_backfill_runs_state"),
    )
    op.create_index("ix_backfill_runs_queued", "backfill_runs", ["backfill_id", "session_date"],
                    postgresql_where=sa.text("state = 'queued'"))
    op.create_index("ix_backfill_runs_execution_id", "backfill_runs", ["execution_id"])


def downgrade() -> None:
    op.drop_table("backfill_runs")
    op.drop_table("backfills")
    # The older schema knows neither: a partial run is an end, as it counted before; the
    # outbox rows of backfill runs are history that the older code has no word for.
    op.execute("UPDATE tracked_runs SET status = 'succeeded' WHERE status = 'partial'")
    op.execute("DELETE FROM schedule_slots WHERE trigger = 'backfill'")
    _replace_check("tracked_runs", "ck_tracked_runs_status",
                   "status IN ('requested', 'running', 'succeeded', 'failed')")
    _replace_check("schedule_slots", "ck_schedule_slots_trigger", "trigger IN ('schedule', 'manual')")
