"""The step runner: ordered steps, each with a timeout, and the lifecycle around them.

A run is `run.started`, then per step `step.started` and `step.succeeded`, then
`run.succeeded`. A step that raises (or times out) gets an ERROR log record with the
error type and a traceback summary, `step.failed` and `run.failed`; the steps after it
do not run. A failed run is an outcome, returned, never raised: the only exceptions
that leave `run_workflow` are `PublishError` (the broker did not take an event, so the
request must be delivered again) and cancellation (the service is shutting down).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from services.signals.market_data.provider import MarketDataProvider
from services.signals.workflow.artifacts import StepArtifacts
from services.signals.workflow.emitter import Publish, PublishError, RunEmitter, StepLog, traceback_summary
from shared.artifact_store import ArtifactStore
from shared.events import (
    RunFailed,
    RunRequested,
    RunStarted,
    RunSucceeded,
    StepFailed,
    StepStarted,
    StepSucceeded,
)

ATTEMPT = 1  # steps are not retried inside a run; a redelivered request re-runs with the same ids


class PreviousSignalsLookup(Protocol):
    async def __call__(self, *, workflow_id: str, execution_id: str) -> PreviousSignals | None: ...


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
    status: Literal["succeeded", "failed"]
    error: str | None = None
    failed_step: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


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
    params = {**request.params.model_dump(exclude_none=True), "symbols": list(symbols)}
    await emitter.emit(
        RunStarted, "run.started", trigger=request.trigger, params=params, steps=workflow.step_names
    )
    await run_log.info(
        f"run started: {len(workflow.steps)} steps for {', '.join(symbols)}",
        trigger=request.trigger,
        steps=workflow.step_names,
        symbols=list(symbols),
        provider=resources.provider.name,
    )
    run_started = time.monotonic()
    output: Any = None
    artifact_count = 0
    for step in workflow.steps:
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
        )
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
            await emitter.emit(RunFailed, "run.failed", error=run_error)
            return RunOutcome(request.execution_id, "failed", error=run_error, failed_step=step.name)
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
    await run_log.info("run succeeded", **summary)
    await emitter.emit(RunSucceeded, "run.succeeded", summary=summary)
    return RunOutcome(request.execution_id, "succeeded", summary=summary)


async def reject_run(request: RunRequested, publish: Publish, reason: str) -> RunOutcome:
    """A valid request this service cannot run (e.g. an unknown workflow): the run fails visibly."""
    emitter = RunEmitter(publish, workflow_id=request.workflow_id, execution_id=request.execution_id)
    await StepLog(emitter, None).error(f"run rejected: {reason}", reason=reason)
    await emitter.emit(RunFailed, "run.failed", error=reason)
    return RunOutcome(request.execution_id, "failed", error=reason)
