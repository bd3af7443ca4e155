"""steps of external runs are external, not running

A step that only an outside producer's artifacts or logs announce has no lifecycle
that ibflow knows: it was shown as running forever.

Revision ID: a7c1e2f40003
Revises: a7c1e2f40002
Create Date: 2026-12-02 01:00:00
"""

from __future__ import annotations

from alembic import op

revision = "a7c1e2f40003"
down_revision = "a7c1e2f40002"
branch_labels = None
depends_on = None

STEP_STATUSES_BEFORE = ("pending", "running", "succeeded", "failed", "skipped")
STEP_STATUSES = (*STEP_STATUSES_BEFORE, "external")


def _replace_check(values: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_run_steps_status"), "run_steps", type_="check")
    op.create_check_constraint(
        op.f("ck_run_steps_status"), "run_steps", f"status IN ({', '.join(repr(v) for v in values)})"
    )


def upgrade() -> None:
    _replace_check(STEP_STATUSES)
    op.execute(
        """
        UPDATE run_steps SET status = 'external'
        WHERE status = 'running' AND attempt = 0
          AND execution_id IN (SELECT execution_id FROM runs WHERE status = 'external')
        """
    )


def downgrade() -> None:
    op.execute("UPDATE run_steps SET status = 'running' WHERE status = 'external'")
    _replace_check(STEP_STATUSES_BEFORE)
