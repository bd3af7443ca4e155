"""The step runner: ordered steps, each with a timeout, and the lifecycle around them.

A run is `run.started`, then per step `step.started` and `step.succeeded`, then
`run.succeeded`, or `run.partial` with the failed items when a step reported items (a
symbol) it could not process: a run succeeds only when nothing failed. A step that
raises (or times out) gets an ERROR log record with the error type and a traceback
summary, `step.failed`, a `step.skipped` for each step after it (they do not run), and
`run.failed`. A failed run is an outcome, returned, never raised: the only exceptions
that leave `run_workflow` are `PublishError` (the broker did not take an event, so the
request must be delivered again) and cancellation (the service is shutting down).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Literal, Protocol

from services.signals import metrics
from services.signals.market_data.provider import MarketDataProvider
from services.signals.workflow.artifacts import StepArtifacts
from services.signals.workflow.emitter import Publish, PublishError, RunEmitter, StepLog, traceback_summary
from shared import tracing
from shared.artifact_store import ArtifactStore
from shared.event_bounds import storable_text
from shared.events import (
    FailedItem,
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

if TYPE_CHECKING:
    from services.signals.scorecard.scoring import StoredSignal

ATTEMPT = 1  # steps are not retried inside a run; a redelivered request re-runs with the same ids
MAX_REASON_CHARS = 2000


class PreviousSignalsLookup(Protocol):
    async def __call__(self, *, workflow_id: str, execution_id: str) -> PreviousSignals | None: ...


class StoredSignalsLookup(Protocol):
    async def __call__(self, *, workflow_id: str) -> tuple[list[StoredSignal], int]:
        """Every signal the workflow published, and how many signals artifacts held them."""


@dataclass(frozen=True)
class PreviousSignals:
    execution_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class RunResources:
    """What the service lends every run."""

    provider: MarketDataProvider
    store: ArtifactStore
    watchlist: tuple[str, ...]
    history_days: int
    step_timeout_seconds: float
    inline_max_bytes: int
    previous_signals: PreviousSignalsLookup
    # what a scorecard scores; None in a service that runs no scorecard workflow
    stored_signals: StoredSignalsLookup | None = None


@dataclass(frozen=True)
class StepContext:
    workflow_id: str
    execution_id: str
    step_name: str
    symbols: tuple[str, ...]
    params: dict[str, Any]
    resources: RunResources
    emitter: RunEmitter
    log: StepLog
    artifacts: StepArtifacts
    # The run's failed items so far, shared by its steps.
    failed_items: list[FailedItem] = field(default_factory=list)
    # A run as of a past close: its market data ends at this date (None: the latest data).
    as_of: date | None = None

    def item_failed(self, item: str, reason: str, *, code: int | None = None) -> None:
        """`item` (a symbol) could not be processed in this step, and the step goes on
        without it: the run ends `partial`, with the reason, instead of `succeeded`."""
        text = storable_text(reason)[:MAX_REASON_CHARS] or "no reason given"
        self.failed_items.append(FailedItem(item=item, step=self.step_name, reason=text, code=code))


StepFunction = Callable[[StepContext, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Step:
    name: str
    run: StepFunction


@dataclass(frozen=True)
class Workflow:
    """Steps in order; each gets the previous step's return value. The last step's
    return value, when it is a dict, becomes the `run.succeeded` summary."""

    workflow_id: str
    steps: tuple[Step, ...]

    @property
    def step_names(self) -> list[str]:
        return [step.name for step in self.steps]


@dataclass(frozen=True)
class RunOutcome:
    execution_id: str
    status: Literal["succeeded", "partial", "failed"]
    error: str | None = None
    failed_step: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    failed_items: tuple[FailedItem, ...] = ()


def run_symbols(request: RunRequested, watchlist: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(request.params.symbols or watchlist))


def describe_error(exc: BaseException, *, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"step timed out after {timeout:g} s (STEP_TIMEOUT_SECONDS)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_workflow(
    workflow: Workflow, request: RunRequested, resources: RunResources, publish: Publish
) -> RunOutcome:
    emitter = RunEmitter(publish, workflow_id=request.workflow_id, execution_id=request.execution_id)
    run_log = StepLog(emitter, None)
    symbols = run_symbols(request, resources.watchlist)
    params = {**request.params.model_dump(mode="json", exclude_none=True), "symbols": list(symbols)}
    await emitter.emit(
        RunStarted, "run.started", trigger=request.trigger, params=params, steps=workflow.step_names
    )
    as_of = request.params.as_of
    await run_log.info(
        f"run started: {len(workflow.steps)} steps for {', '.join(symbols)}"
        + (f" as of {as_of.isoformat()}" if as_of else ""),
        trigger=request.trigger,
        steps=workflow.step_names,
        symbols=list(symbols),
        provider=resources.provider.name,
    )
    run_started = time.monotonic()
    output: Any = None
    artifact_count = 0
    failed_items: list[FailedItem] = []
    for index, step in enumerate(workflow.steps):
        context = StepContext(
            workflow_id=request.workflow_id,
            execution_id=request.execution_id,
            step_name=step.name,
            symbols=symbols,
            params=params,
            resources=resources,
            emitter=emitter,
            log=StepLog(emitter, step.name),
            artifacts=StepArtifacts(
                emitter, resources.store, step_name=step.name, inline_max_bytes=resources.inline_max_bytes
            ),
            failed_items=failed_items,
            as_of=as_of,
        )
        with tracing.child_span(f"step {step.name}", attributes={"ibflow.step_name": step.name}):
            await emitter.emit(StepStarted, f"step.started:{step.name}:{ATTEMPT}", step_name=step.name, attempt=ATTEMPT)
            step_started = time.monotonic()
            try:
                # CPU-heavy work inside steps runs in threads; a timed-out thread finishes in
                # the background, but the run does not wait for it.
                async with asyncio.timeout(resources.step_timeout_seconds):
                    output = await step.run(context, output)
            except PublishError:
                raise
            except Exception as exc:
                _observe_step(request.workflow_id, step.name, "failed", step_started)
                error = describe_error(exc, timeout=resources.step_timeout_seconds)
                await context.log.error(
                    f"step {step.name} failed: {error}",
                    error_type=type(exc).__name__,
                    error=error,
                    traceback=traceback_summary(exc),
                    duration_seconds=round(time.monotonic() - step_started, 3),
                )
                await emitter.emit(
                    StepFailed, f"step.failed:{step.name}:{ATTEMPT}", step_name=step.name, attempt=ATTEMPT, error=error
                )
                run_error = f"step {step.name} failed: {error}"
                await _skip(emitter, workflow.steps[index + 1 :], reason=run_error)
                await emitter.emit(RunFailed, "run.failed", error=run_error, failed_items=failed_items)
                _observe_run(request.workflow_id, "failed", run_started)
                return RunOutcome(
                    request.execution_id, "failed", error=run_error, failed_step=step.name,
                    failed_items=tuple(failed_items),
                )
            _observe_step(request.workflow_id, step.name, "succeeded", step_started)
            artifact_count += len(context.artifacts.published)
            await context.log.info(
                f"step {step.name} succeeded",
                duration_seconds=round(time.monotonic() - step_started, 3),
                artifacts=[a.name for a in context.artifacts.published],
            )
            await emitter.emit(
                StepSucceeded, f"step.succeeded:{step.name}:{ATTEMPT}", step_name=step.name, attempt=ATTEMPT
            )
    summary = {
        **(output if isinstance(output, dict) else {}),
        "artifact_count": artifact_count,
        "duration_seconds": round(time.monotonic() - run_started, 3),
    }
    if failed_items:
        described = "; ".join(f"{f.item} ({f.step}): {f.reason}" for f in failed_items)
        await run_log.warning(
            f"run partial: {len(failed_items)} failed item{'s' if len(failed_items) != 1 else ''}: {described}",
            failed_items=[f.model_dump(mode="json") for f in failed_items],
            **summary,
        )
        await emitter.emit(RunPartiallySucceeded, "run.partial", summary=summary, failed_items=failed_items)
        _observe_run(request.workflow_id, "partial", run_started)
        return RunOutcome(request.execution_id, "partial", summary=summary, failed_items=tuple(failed_items))
    await run_log.info("run succeeded", **summary)
    await emitter.emit(RunSucceeded, "run.succeeded", summary=summary)
    _observe_run(request.workflow_id, "succeeded", run_started)
    return RunOutcome(request.execution_id, "succeeded", summary=summary)


def _observe_step(workflow_id: str, step_name: str, status: str, started: float) -> None:
    metrics.STEP_DURATION.labels(workflow_id, step_name, status).observe(time.monotonic() - started)


def _observe_run(workflow_id: str, status: str, started: float) -> None:
    metrics.RUN_DURATION.labels(workflow_id, status).observe(time.monotonic() - started)


async def _skip(emitter: RunEmitter, steps: Sequence[Step], *, reason: str) -> None:
    for step in steps:
        text = storable_text(reason)[:MAX_REASON_CHARS]
        await emitter.emit(StepSkipped, f"step.skipped:{step.name}", step_name=step.name, reason=text)


async def reject_run(request: RunRequested, publish: Publish, reason: str) -> RunOutcome:
    """A valid request this service cannot run (e.g. an unknown workflow): the run fails visibly."""
    emitter = RunEmitter(publish, workflow_id=request.workflow_id, execution_id=request.execution_id)
    await StepLog(emitter, None).error(f"run rejected: {reason}", reason=reason)
    await emitter.emit(RunFailed, "run.failed", error=reason)
    return RunOutcome(request.execution_id, "failed", error=reason)
