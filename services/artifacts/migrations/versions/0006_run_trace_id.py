"""runs.trace_id: the W3C trace id of the trigger that asked for the run

Revision ID: a7c1e2f40006
Revises: a7c1e2f40005
Create Date: 2026-12-02 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a7c1e2f40006"
down_revision = "a7c1e2f40005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing, and runs from before it (or
    # from a producer that sends no trace context) simply have none.
    op.add_column("runs", sa.Column("trace_id", sa.String(32), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "trace_id")
