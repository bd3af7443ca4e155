"""How events move a run and its steps along, whatever order they arrive in.

Different topics are not ordered with respect to each other and delivery is
at-least-once, so every rule here is monotonic: a replayed or late event never moves a
run or step backwards (a late `step.started` does not undo `step.succeeded`).
These functions change rows in memory; `store.store_batch` loads and saves them.

A run's status, until an outcome (`run.succeeded`, `run.partial`, `run.failed`) arrives:
`queued` once ibflow requested it, `running` once it started or anything of it arrived
after the request, and `external` while only artifacts, logs or step events of it are
known: a producer outside ibflow, which ibflow does not track; the steps such events
name are `external` too. The later of two outcome events is the outcome. A step's
`skipped` (an earlier step failed) counts as attempt 0: any real attempt of the step
supersedes it.
"""

from __future__ import annotations

from datetime import datetime

from services.artifacts.db.models import FINISHED_STEP_STATUSES, TERMINAL_STATUSES, Run, RunStep
from shared.events import (
    Event,
    RunFailed,
    RunPartiallySucceeded,
    RunRequested,
    RunStarted,
    RunSucceeded,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)

STEP_EVENTS = (StepStarted, StepSucceeded, StepFailed, StepSkipped)
OUTCOME_EVENTS = (RunSucceeded, RunPartiallySucceeded, RunFailed)


def apply_event(run: Run, event: Event) -> None:
    """Fold one newly stored event (of any kind) into its run and steps."""
    run.opened_at = min(run.opened_at, event.occurred_at)
    run.last_event_at = event.occurred_at if run.last_event_at is None else max(run.last_event_at, event.occurred_at)
    match event:
        case RunRequested():
            _requested(run, event)
        case RunStarted():
            _started(run, event)
        case RunSucceeded() | RunPartiallySucceeded() | RunFailed():
            _finished(run, event)
        case StepStarted() | StepSucceeded() | StepFailed():
            _step_event(step_of(run, event.step_name, seen_running=False), event)
        case StepSkipped():
            _skipped(step_of(run, event.step_name, seen_running=False), event)
        case _ if event.step_name is not None:
            # A log line or artifact of a step no lifecycle event has announced yet.
            step_of(run, event.step_name, seen_running=True)
    if run.status not in TERMINAL_STATUSES:
        run.status = _open_status(run, event)
    if _run_by_ibflow(run):
        for step in run.steps:
            if step.status == "external":
                # Seen at work before ibflow's own events of the run arrived.
                step.status = "running"


def _run_by_ibflow(run: Run) -> bool:
    return run.requested_at is not None or run.started_at is not None


def _open_status(run: Run, event: Event) -> str:
    """The status of a run without an outcome, after `event`."""
    if not _run_by_ibflow(run):
        return "external"
    # Anything but the request itself, now or before, means the run has begun.
    begun = run.started_at is not None or run.status in ("running", "external") or not isinstance(event, RunRequested)
    return "running" if begun else "queued"


def step_of(run: Run, step_name: str, *, seen_running: bool) -> RunStep:
    for step in run.steps:
        if step.step_name == step_name:
            return step
    step = RunStep(
        execution_id=run.execution_id,
        step_name=step_name,
        position=len(run.steps),
        status=("running" if _run_by_ibflow(run) else "external") if seen_running else "pending",
        attempt=0,
        artifact_count=0,
    )
    run.steps.append(step)
    return step


def _requested(run: Run, event: RunRequested) -> None:
    run.requested_at = _earliest(run.requested_at, event.occurred_at)
    run.trigger = event.trigger
    run.scheduled_for = event.scheduled_for
    run.requested_by = event.requested_by
    if not run.params:
        # run.started carries the params the run actually used; keep those when known.
        run.params = event.params.model_dump(mode="json", exclude_none=True)


def _started(run: Run, event: RunStarted) -> None:
    run.started_at = _earliest(run.started_at, event.occurred_at)
    if event.trigger and not run.trigger:
        run.trigger = event.trigger
    if event.params:
        run.params = dict(event.params)
    if event.steps:
        run.planned_steps = list(event.steps)
        for name in event.steps:
            step_of(run, name, seen_running=False)
        order = {name: i for i, name in enumerate(event.steps)}
        unplanned = len(order)
        for step in sorted(run.steps, key=lambda s: s.position):
            if step.step_name in order:
                step.position = order[step.step_name]
            else:
                step.position = unplanned
                unplanned += 1
        run.steps.sort(key=lambda s: s.position)


def _finished(run: Run, event: RunSucceeded | RunPartiallySucceeded | RunFailed) -> None:
    # Of two terminal events for one run, the later one is the outcome.
    if run.status in TERMINAL_STATUSES and run.finished_at and event.occurred_at < run.finished_at:
        return
    run.finished_at = event.occurred_at
    run.failed_items = [item.model_dump(mode="json") for item in getattr(event, "failed_items", [])]
    match event:
        case RunSucceeded():
            run.status = "succeeded"
            run.summary = dict(event.summary)
            run.error = None
        case RunPartiallySucceeded():
            run.status = "partial"
            run.summary = dict(event.summary)
            run.error = None
        case RunFailed():
            run.status = "failed"
            run.error = event.error


def _phase(status: str) -> int:
    return 2 if status in FINISHED_STEP_STATUSES else 1 if status in ("running", "external") else 0


def _skipped(step: RunStep, event: StepSkipped) -> None:
    # Attempt 0 and finished: it moves only a step of which nothing else is known.
    if (0, 2) <= (step.attempt, _phase(step.status)):
        return
    step.status = "skipped"
    step.skipped_reason = event.reason
    step.finished_at = event.occurred_at


def _step_event(step: RunStep, event: StepStarted | StepSucceeded | StepFailed) -> None:
    status = (
        "running" if isinstance(event, StepStarted) else "succeeded" if isinstance(event, StepSucceeded) else "failed"
    )
    if (event.attempt, _phase(status)) <= (step.attempt, _phase(step.status)):
        # Older news: only fill in a start time this attempt was missing.
        if isinstance(event, StepStarted) and event.attempt == step.attempt and step.started_at is None:
            step.started_at = event.occurred_at
        return
    new_attempt = event.attempt != step.attempt
    step.attempt = event.attempt
    step.status = status
    step.skipped_reason = None
    if isinstance(event, StepStarted):
        step.started_at = event.occurred_at
        step.finished_at = None
        step.error = None
        return
    if new_attempt:
        # This attempt's start has not arrived (yet); an earlier attempt's would mislead.
        step.started_at = None
    step.finished_at = event.occurred_at
    step.error = event.error if isinstance(event, StepFailed) else None


def _earliest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None else min(current, candidate)
