"""the retention ledger: what each retention rule removed in each sweep

Revision ID: a7c1e2f40005
Revises: a7c1e2f40004
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "a7c1e2f40005"
down_revision = "a7c1e2f40004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "artifacts_retention_ledger",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=False),
        sa.Column("target", sa.String(50), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("cutoff", TZ, nullable=True),
        sa.Column("removed", sa.BigInteger(), nullable=False),
        sa.Column("removed_bytes", sa.BigInteger(), nullable=True),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("detail", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts_retention_ledger")),
    )
    op.create_index("idx_artifacts_retention_ledger_started", "artifacts_retention_ledger", ["started_at"])


def downgrade() -> None:
    # The ledger is a record of deletions only: the older schema has no place for it.
    op.drop_table("artifacts_retention_ledger")
