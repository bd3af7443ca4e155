"""`/api/runs`: runs with their steps and progress, and how a run's signals moved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from services.artifacts.api import cursors, mapping, schemas
from services.artifacts.api.deps import ExecutionIdDep, RuntimeDep, SessionDep
from services.artifacts.db.models import Run
from services.artifacts.queries.artifacts import latest_signals_artifact
from services.artifacts.queries.runs import RunFilters, get_run, list_runs, previous_successful_run_with_signals
from services.artifacts.signals_diff import diff_signals, signals_by_symbol
from shared.http import error_responses
from shared.http_params import Instant, text_query

router = APIRouter(prefix="/api/runs", tags=["runs"])


def abandoned_before(runtime: RuntimeDep) -> datetime:
    """Open runs with no event since this instant are shown as abandoned."""
    return datetime.now(UTC) - timedelta(seconds=runtime.settings.artifacts_run_abandoned_after_seconds)


@router.get("", response_model=schemas.RunPage)
@router.get("/", response_model=schemas.RunPage, include_in_schema=False)
async def list_runs_route(
    session: SessionDep,
    runtime: RuntimeDep,
    workflow_id: Annotated[str | None, text_query(128)] = None,
    status: Annotated[schemas.RunStatus | None, Query(description=schemas.RUN_STATUS_DESCRIPTION)] = None,
    trigger: Annotated[str | None, text_query(50)] = None,
    started_after: Annotated[
        Instant | None, Query(description="runs that began (requested or started) at or after it")
    ] = None,
    started_before: Annotated[Instant | None, Query(description="runs that began before it")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, cursors.RUNS.query()] = None,
) -> schemas.RunPage:
    cutoff = abandoned_before(runtime)
    filters = RunFilters(
        workflow_id=workflow_id,
        status=status,
        trigger=trigger,
        started_after=started_after,
        started_before=started_before,
        abandoned_before=cutoff,
    )
    after = cursors.RUNS.decode(cursor) if cursor else None
    listings, total, more = await list_runs(
        session, filters, limit, after, total_cap=runtime.settings.artifacts_list_total_cap
    )
    next_cursor = None
    if more and listings:
        last = listings[-1].run
        next_cursor = cursors.RUNS.encode(last.opened_at, last.execution_id)
    return schemas.RunPage(
        runs=[
            mapping.run_summary(item.run, item.steps_total, item.steps_finished, abandoned_before=cutoff)
            for item in listings
        ],
        total=total.count,
        total_is_exact=total.exact,
        limit=limit,
        next_cursor=next_cursor,
    )


async def run_or_404(session: SessionDep, execution_id: str) -> Run:
    run = await get_run(session, execution_id)
    if run is None:
        raise HTTPException(status_code=404, detail=f"no run {execution_id!r}")
    return run


NO_RUN = error_responses(404, e404="no such run")


@router.get("/{execution_id}", response_model=schemas.RunDetail, responses=NO_RUN)
async def get_run_route(session: SessionDep, runtime: RuntimeDep, execution_id: ExecutionIdDep) -> schemas.RunDetail:
    return mapping.run_detail(await run_or_404(session, execution_id), abandoned_before=abandoned_before(runtime))


@router.get("/{execution_id}/signals-diff", response_model=schemas.SignalsDiff, responses=NO_RUN)
async def signals_diff_route(session: SessionDep, execution_id: ExecutionIdDep) -> schemas.SignalsDiff:
    run = await run_or_404(session, execution_id)
    current = await latest_signals_artifact(session, run.execution_id)
    diff = schemas.SignalsDiff(
        execution_id=run.execution_id,
        workflow_id=run.workflow_id,
        artifact_id=current.artifact_id if current else None,
        previous_execution_id=None,
        previous_artifact_id=None,
        comparable=False,
        note=None,
        changed_actions=[],
        strength_moves=[],
        new_symbols=[],
        dropped_symbols=[],
        unchanged_symbols=[],
    )
    current_signals = signals_by_symbol(current.payload) if current else None
    if current_signals is None:
        diff.note = f"run {run.execution_id} has no signals artifact with a signals list (yet)"
        return diff
    previous_run = await previous_successful_run_with_signals(session, run)
    if previous_run is None:
        diff.note = f"no earlier successful run of {run.workflow_id} with signals to compare with"
        return diff
    previous = await latest_signals_artifact(session, previous_run.execution_id)
    diff.previous_execution_id = previous_run.execution_id
    diff.previous_artifact_id = previous.artifact_id
    previous_signals = signals_by_symbol(previous.payload)
    if previous_signals is None:
        diff.note = f"the signals artifact of {previous_run.execution_id} has no signals list"
        return diff
    result = diff_signals(current_signals, previous_signals)
    diff.comparable = True
    diff.changed_actions = [mapping.signal_change(c) for c in result.changed_actions]
    diff.strength_moves = [mapping.signal_change(c) for c in result.strength_moves]
    diff.new_symbols = [mapping.signal_change(c) for c in result.new_symbols]
    diff.dropped_symbols = [mapping.signal_change(c) for c in result.dropped_symbols]
    diff.unchanged_symbols = result.unchanged_symbols
    return diff
