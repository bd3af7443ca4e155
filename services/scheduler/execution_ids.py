"""Execution ids and event ids of the runs the scheduler requests.

A scheduled slot's execution id is derived from (workflow, slot instant in UTC), so
every replica computes the same id for the same slot and the database claim on it is
unique: `scheduled-ibkr_trading_signal_workflow-20261218T140000Z` is the 09:00 New
York run of 2026-12-18. A backfill's run of a session is
`backfill-<workflow>-<YYYYMMDD>`, the same whichever backfill asks for it, so a date is
run once however often it is backfilled. A manual trigger gets a fresh
`manual-<32 hex>` id; a scorecard run `scorecard-<workflow>-<backfill id or 32 hex>`.
The event id is derived from the execution id, so a re-published request is the same
event, byte for byte, and consumers deduplicate it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import UUID, uuid4, uuid5

_EVENT_NAMESPACE = UUID("6f0c7b8e-2d4a-5b6c-9e1f-3a7d5c9b2e40")


def scheduled_execution_id(workflow_id: str, slot_at: datetime) -> str:
    return f"scheduled-{workflow_id}-{slot_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


BACKFILL_PREFIX = "backfill-"


def backfill_execution_id(workflow_id: str, session: date) -> str:
    return f"{BACKFILL_PREFIX}{workflow_id}-{session:%Y%m%d}"


def manual_execution_id() -> str:
    return f"manual-{uuid4().hex}"


def scorecard_execution_id(workflow_id: str, occasion: str | None = None) -> str:
    return f"scorecard-{workflow_id}-{occasion or uuid4().hex}"


def request_event_id(execution_id: str) -> UUID:
    return uuid5(_EVENT_NAMESPACE, execution_id)
