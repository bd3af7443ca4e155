"""`/api/runs`: runs with their steps and progress, and how a run's signals moved (as signals said)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import ValidationError

from services.artifacts.api import cursors, mapping, schemas
from services.artifacts.api.deps import ExecutionIdDep, RuntimeDep, SessionDep
from services.artifacts.db.models import Run
from services.artifacts.queries.artifacts import latest_inline_artifact
from services.artifacts.queries.runs import RunFilters, get_run, list_runs
from shared.api_models import SIGNALS_DIFF_KIND, SignalsDiff
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


NO_SIGNALS_DIFF = error_responses(404, e404="no such run, or the run has no signals diff")


@router.get("/{execution_id}/signals-diff", response_model=SignalsDiff, responses=NO_SIGNALS_DIFF)
async def signals_diff_route(session: SessionDep, execution_id: ExecutionIdDep) -> SignalsDiff:
    """What changed since the previous successful run, as the signals service computed it for
    the run's report (its `signals_diff` artifact); this service does not compare signals."""
    run = await run_or_404(session, execution_id)
    artifact = await latest_inline_artifact(session, run.execution_id, SIGNALS_DIFF_KIND)
    if artifact is None:
        raise HTTPException(
            status_code=404,
            detail=f"run {run.execution_id!r} has no signals diff: the signals service publishes one only for a run "
            f"with a previous successful run of {run.workflow_id} to compare with, and runs from before it did so "
            "have none",
        )
    try:
        return SignalsDiff.model_validate(artifact.payload)
    except ValidationError as exc:
        raise HTTPException(
            status_code=500,
            detail=f"the signals_diff artifact {artifact.artifact_id} of run {run.execution_id!r} does not match "
            f"the contract: {exc.error_count()} error(s), first: {exc.errors()[0]['msg']}",
        ) from None
