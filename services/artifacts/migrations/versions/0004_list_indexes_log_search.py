"""indexes that keep lists flat from 10,000 to 1,000,000 artifacts, and log text search

Every filter of `GET /api/artifacts/` and `GET /api/runs` gets an index that starts with
the filter and goes on in the list's order (created_at or opened_at, then the id): a
page reads its own rows from the index, a capped total counts at most the cap's index
entries, and a time range is a range inside it. Before, a `dag_id` page walked
created_at backwards past thousands of other DAGs' rows, and `task_id` had no index at
all. The composites for `kind` and `status` replace the single-column ones they extend;
the old system's five index names stay as they are (docs/architecture.md).

Log text search (`?q=` on a run's logs, ILIKE '%...%') gets a trigram GIN index, so a
search for a rare text finds its few lines without reading the whole run, and a larger
statistics sample of messages, so the planner can tell a rare text from a common one. pg_trgm ships
with PostgreSQL (the embedded server has it); it is a trusted extension, so a database
owner without superuser rights may create it.

Built with plain CREATE INDEX inside the migration's transaction: writes to these tables
wait while it runs (seconds for a million rows, about a minute for millions of logs).

Revision ID: a7c1e2f40004
Revises: a7c1e2f40003
Create Date: 2026-12-02 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a7c1e2f40004"
down_revision = "a7c1e2f40003"
branch_labels = None
depends_on = None

# name, table, columns, partial-index condition
LIST_INDEXES = (
    ("idx_artifacts_workflow_created", "artifacts", ("workflow_id", "created_at", "artifact_id"), None),
    ("idx_artifacts_workflow_step_created", "artifacts",
     ("workflow_id", "step_name", "created_at", "artifact_id"), None),
    ("idx_artifacts_workflow_kind_created", "artifacts", ("workflow_id", "kind", "created_at", "artifact_id"), None),
    ("idx_artifacts_step_created", "artifacts", ("step_name", "created_at", "artifact_id"), None),
    ("idx_artifacts_kind_created", "artifacts", ("kind", "created_at", "artifact_id"), None),
    # Only artifacts of outside producers (Airflow) carry these: the index holds only them.
    ("idx_artifacts_dag_created", "artifacts", ("dag_id", "created_at", "artifact_id"), "dag_id IS NOT NULL"),
    ("idx_artifacts_dag_task_created", "artifacts",
     ("dag_id", "task_id", "created_at", "artifact_id"), "dag_id IS NOT NULL"),
    ("idx_artifacts_task_created", "artifacts", ("task_id", "created_at", "artifact_id"), "task_id IS NOT NULL"),
    ("idx_runs_status_opened", "runs", ("status", "opened_at", "execution_id"), None),
    ("idx_runs_trigger_opened", "runs", ("trigger", "opened_at", "execution_id"), None),
)
# single-column indexes that the composites above start with, so they only cost writes
REPLACED = (("idx_artifacts_kind", "artifacts", ("kind",)), ("idx_runs_status", "runs", ("status",)))
# rows of log_records.message that ANALYZE samples (x300): the default is 100
MESSAGE_STATISTICS = 1000


def upgrade() -> None:
    for name, table, columns, where in LIST_INDEXES:
        op.create_index(name, table, list(columns), postgresql_where=sa.text(where) if where else None)
    for name, table, _ in REPLACED:
        op.drop_index(name, table_name=table)
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index(
        "idx_log_records_message_trgm",
        "log_records",
        ["message"],
        postgresql_using="gin",
        postgresql_ops={"message": "gin_trgm_ops"},
    )
    # Whether the trigram index or the run's time order finds a search's first page
    # sooner depends on how many lines hold the text; the planner guesses that from a
    # sample of messages, and the default sample took a symbol on 2 % of the lines for
    # one in ten thousand.
    op.execute(f"ALTER TABLE log_records ALTER COLUMN message SET STATISTICS {MESSAGE_STATISTICS}")


def downgrade() -> None:
    # The extension stays: the database may hold other users of it (the scheduler's
    # tables live here too), and keeping it changes nothing for the older code.
    op.execute("ALTER TABLE log_records ALTER COLUMN message SET STATISTICS -1")
    op.drop_index("idx_log_records_message_trgm", table_name="log_records")
    for name, table, columns in REPLACED:
        op.create_index(name, table, list(columns))
    for name, table, _, _ in reversed(LIST_INDEXES):
        op.drop_index(name, table_name=table)
