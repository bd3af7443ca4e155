"""run states that tell the truth: partial and external runs, skipped steps

Runs get `partial` (the workflow ended with failed items, kept in `failed_items`) and
`external` (only artifacts or logs of a producer outside ibflow); steps get `skipped`
with the reason. `last_event_at` lets a run that went quiet be shown as abandoned.

Revision ID: a7c1e2f40002
Revises: a7c1e2f40001
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "a7c1e2f40002"
down_revision = "a7c1e2f40001"
branch_labels = None
depends_on = None

RUN_STATUSES_BEFORE = ("queued", "running", "succeeded", "failed")
RUN_STATUSES = (*RUN_STATUSES_BEFORE, "partial", "external")
STEP_STATUSES_BEFORE = ("pending", "running", "succeeded", "failed")
STEP_STATUSES = (*STEP_STATUSES_BEFORE, "skipped")


def _in(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


def _replace_check(table: str, values: tuple[str, ...]) -> None:
    op.drop_constraint(op.f(f"ck_{table}_status"), table, type_="check")
    op.create_check_constraint(op.f(f"ck_{table}_status"), table, _in(values))


def upgrade() -> None:
    _replace_check("runs", RUN_STATUSES)
    _replace_check("run_steps", STEP_STATUSES)
    op.add_column("runs", sa.Column("failed_items", postgresql.JSONB(), server_default="[]", nullable=False))
    op.add_column("runs", sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("run_steps", sa.Column("skipped_reason", sa.Text(), nullable=True))
    # The latest event each run has stored so far; GREATEST skips nulls.
    op.execute(
        """
        UPDATE runs SET last_event_at = GREATEST(
            opened_at, requested_at, started_at, finished_at,
            (SELECT max(occurred_at) FROM run_events e WHERE e.execution_id = runs.execution_id),
            (SELECT max(created_at) FROM artifacts a WHERE a.execution_id = runs.execution_id),
            (SELECT max(occurred_at) FROM log_records l WHERE l.execution_id = runs.execution_id)
        )
        """
    )
    # A run that only an outside producer ever wrote to was shown as running.
    op.execute(
        """
        UPDATE runs SET status = 'external'
        WHERE status = 'running' AND requested_at IS NULL AND started_at IS NULL
        """
    )


def downgrade() -> None:
    # The old states have no words for these: the nearest honest ones.
    op.execute("UPDATE runs SET status = 'running' WHERE status = 'external'")
    op.execute("UPDATE runs SET status = 'failed', error = coalesce(error, 'finished with failed items') "
               "WHERE status = 'partial'")
    op.execute("UPDATE run_steps SET status = 'pending' WHERE status = 'skipped'")
    op.drop_column("run_steps", "skipped_reason")
    op.drop_column("runs", "last_event_at")
    op.drop_column("runs", "failed_items")
    _replace_check("run_steps", STEP_STATUSES_BEFORE)
    _replace_check("runs", RUN_STATUSES_BEFORE)
