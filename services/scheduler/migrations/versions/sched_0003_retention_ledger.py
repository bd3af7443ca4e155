"""scheduler_retention_ledger: what each retention rule removed in each sweep

Revision ID: sched_0003
Revises: sched_0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "sched_0003"
down_revision = "sched_0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scheduler_retention_ledger",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.Column("target", sa.String(50), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("cutoff", TS, nullable=True),
        sa.Column("removed", sa.BigInteger(), nullable=False),
        sa.Column("removed_bytes", sa.BigInteger(), nullable=True),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("detail", JSONB(), server_default="{}", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_scheduler_retention_ledger"),
    )
    op.create_index("ix_scheduler_retention_ledger_started_at", "scheduler_retention_ledger", ["started_at"])


def downgrade() -> None:
    # A record of deletions only: the older schema has no place for it.
    op.drop_table("scheduler_retention_ledger")
