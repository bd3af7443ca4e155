"""The scheduler's Prometheus metrics (served at `/metrics`, see shared/metrics.py).

Slot outcomes are counted when the transaction that wrote their ledger entry commits,
so a decision that was rolled back is never counted.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Histogram
from sqlalchemy import event
from sqlalchemy.orm import Session

SLOTS = Counter(
    "ibflow_scheduler_slots_total",
    "Ledger outcomes of slots and manual triggers (fired, queued, skipped, manual, "
    "deduplicated, publish_failed, ...), by workflow and trigger.",
    ["workflow", "trigger", "outcome"],
)
FIRE_DELAY = Histogram(
    "ibflow_scheduler_fire_delay_seconds",
    "From a scheduled slot's nominal time to the broker's ack of its run request.",
    ["workflow"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)

_PENDING = "ibflow_slot_outcomes"


def count_outcome_on_commit(session: Session, *, workflow: str, trigger: str, outcome: str) -> None:
    """Count a ledger outcome once `session` (a sync session, or an AsyncSession's) commits."""
    session.info.setdefault(_PENDING, []).append((workflow, trigger, outcome))


def observe_fire_delay(workflow: str, trigger: str, slot_at: datetime, published_at: datetime) -> None:
    if trigger == "schedule":
        FIRE_DELAY.labels(workflow).observe(max(0.0, (published_at - slot_at).total_seconds()))


@event.listens_for(Session, "after_commit")
def _count_committed(session: Session) -> None:
    for labels in session.info.pop(_PENDING, ()):
        SLOTS.labels(*labels).inc()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)
