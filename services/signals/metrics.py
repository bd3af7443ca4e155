"""The signals service's Prometheus metrics (served at `/metrics`, see shared/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Seconds: a step that reads cached data to a run that waits out IBKR's pacing.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

RUN_DURATION = Histogram(
    "ibflow_signals_run_duration_seconds",
    "From run.started to the run's outcome, by workflow and status (succeeded, partial, failed).",
    ["workflow", "status"],
    buckets=DURATION_BUCKETS,
)
STEP_DURATION = Histogram(
    "ibflow_signals_step_duration_seconds",
    "One step's run, by workflow, step and status (succeeded, failed).",
    ["workflow", "step", "status"],
    buckets=DURATION_BUCKETS,
)
IBKR_STATE = Gauge(
    "ibflow_ibkr_connection_state",
    "1 for the IB gateway connection's current state, 0 for the others.",
    ["state"],
)
IBKR_TRANSITIONS = Counter(
    "ibflow_ibkr_connection_transitions_total",
    "Changes of the IB gateway connection's state, by the state left and the state entered.",
    ["from_state", "to_state"],
)
PACING_WAIT = Histogram(
    "ibflow_ibkr_pacing_wait_seconds",
    "Waits of historical requests for IBKR's pacing rules, by the limit waited for: "
    "rate (requests per window, identical requests, a pause after a violation) or open "
    "(too many requests open at once).",
    ["limit"],
    buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0),
)
PACING_VIOLATIONS = Counter(
    "ibflow_ibkr_pacing_violations_total",
    "IBKR's error 162 (pacing violation) on historical requests.",
)


def ibkr_state(state: str, previous: str | None = None) -> None:
    """The connection entered `state` (from `previous`, a transition; from nothing, a start)."""
    if previous is not None and previous != state:
        IBKR_STATE.labels(previous).set(0)
        IBKR_TRANSITIONS.labels(previous, state).inc()
    IBKR_STATE.labels(state).set(1)
