"""Topic names (docs/architecture.md, "Topics"): the one place they are spelled."""

RUNS_REQUESTED = "ibflow.runs.requested"
RUNS_EVENTS = "ibflow.runs.events"
ARTIFACTS = "ibflow.artifacts"
LOGS = "ibflow.logs"
SIGNALS = "ibflow.signals"
DEADLETTER = "ibflow.deadletter"

ALL_TOPICS = (RUNS_REQUESTED, RUNS_EVENTS, ARTIFACTS, LOGS, SIGNALS, DEADLETTER)
