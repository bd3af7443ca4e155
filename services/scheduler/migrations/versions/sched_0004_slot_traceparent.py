"""schedule_slots.traceparent: the trace context published with the slot's request

Revision ID: sched_0004
Revises: sched_0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "sched_0004"
down_revision = "sched_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Stored beside the exact event bytes, so that a re-published request carries the
    # same trace context as the first publish.
    op.add_column("schedule_slots", sa.Column("traceparent", sa.String(55), nullable=True))


def downgrade() -> None:
    op.drop_column("schedule_slots", "traceparent")
