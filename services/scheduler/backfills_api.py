"""`/api/workflows/{workflow_id}/backfills` and the scorecard request: HTTP over `backfills`."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import select

from services.scheduler.api_schemas import rfc3339_utc
from services.scheduler.backfills import BackfillError, Backfills, Counts, NothingToCancel, run_state
from services.scheduler.catalogue import CATALOGUE
from services.scheduler.cron import ScheduleError
from services.scheduler.rows import Backfill
from services.scheduler.runtime import SchedulerRuntime
from services.scheduler.schedules import validated_params
from shared.events import WORKFLOW_ID_PATTERN, RunParams
from shared.http import error_responses
from shared.http_params import whole_number_in
from shared.scorecard import scorecard_workflow_id

DEFAULT_MAX_ACTIVE_RUNS = 4
MAX_ACTIVE_RUNS = 64
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

WorkflowId = Annotated[str, Path(pattern=WORKFLOW_ID_PATTERN, description="e.g. ibkr_trading_signal_workflow")]
BackfillId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="as returned when it was submitted")]
UNKNOWN_WORKFLOW = error_responses(404, e404="unknown workflow, or it has no schedule yet")
UNKNOWN_BACKFILL = error_responses(404, e404="unknown workflow or backfill")


class BackfillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: date = Field(description="first date, YYYY-MM-DD", examples=["2012-06-01"])
    end: date = Field(description="last date, YYYY-MM-DD (included; not after today)", examples=["2012-08-31"])
    params: RunParams | None = Field(
        default=None, description="every run's params (the schedule's defaults overridden key by key); no as_of"
    )
    max_active_runs: whole_number_in(1, MAX_ACTIVE_RUNS) = Field(
        default=DEFAULT_MAX_ACTIVE_RUNS, description="runs of this backfill requested and not ended at any time"
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
            raise PydanticCustomError("date_format", "a date as YYYY-MM-DD")
        return value


class BackfillAccepted(BaseModel):
    backfill_id: str
    workflow_id: str
    planned: int = Field(description="trading sessions in the range: one run each")
    status_url: str


class BackfillRunView(BaseModel):
    as_of: date
    execution_id: str
    state: Literal["queued", "running", "succeeded", "partial", "failed", "cancelled"]
    requested_by_this_backfill: bool = Field(
        description="false: the run of that date had been requested before (an earlier backfill), and is followed"
    )


class BackfillView(BaseModel):
    backfill_id: str
    workflow_id: str
    start: date
    end: date
    calendar: str
    params: dict[str, Any]
    max_active_runs: int
    status: Literal["running", "succeeded", "partial", "failed", "cancelled"] = Field(
        description="running while sessions are queued or runs going; then failed if a run failed, partial if one "
                    "ended with failed items, else succeeded; cancelled once cancelled"
    )
    planned: int = Field(description="sessions in the range; the sum of the counts below")
    queued: int = Field(description="not requested yet (waiting for a free place)")
    running: int = Field(description="requested, not ended")
    succeeded: int
    partial: int = Field(description="ran to their end with some items (symbols) failed")
    failed: int
    cancelled: int = Field(description="left unrequested by a cancel")
    already_requested: int = Field(description="runs requested before this backfill (same dates), followed not rerun")
    scorecard_execution_id: str | None = Field(description="the scorecard run requested once every run ended")
    created_at: str
    updated_at: str
    cancelled_at: str | None
    runs: list[BackfillRunView] | None = Field(default=None, description="with ?runs=true: every session")


class BackfillList(BaseModel):
    backfills: list[BackfillView]


class ScorecardRequested(BaseModel):
    execution_id: str
    workflow_id: str = Field(description="the scorecard workflow that runs it")
    scores: str = Field(description="the workflow whose signals it scores")


def backfill_view(row: Backfill, counts: Counts, runs: list[BackfillRunView] | None = None) -> BackfillView:
    return BackfillView(
        backfill_id=row.backfill_id, workflow_id=row.workflow_id, start=row.start_date, end=row.end_date,
        calendar=row.calendar, params=row.params, max_active_runs=row.max_active_runs,
        status="cancelled" if row.state == "cancelled" else counts.status,
        planned=counts.planned, queued=counts.queued, running=counts.running, succeeded=counts.succeeded,
        partial=counts.partial, failed=counts.failed, cancelled=counts.cancelled,
        already_requested=counts.already_requested, scorecard_execution_id=row.scorecard_execution_id,
        created_at=rfc3339_utc(row.created_at), updated_at=rfc3339_utc(row.updated_at),
        cancelled_at=rfc3339_utc(row.cancelled_at) if row.cancelled_at else None, runs=runs,
    )


def get_backfills(request: Request) -> Backfills:
    runtime: SchedulerRuntime = request.app.state.runtime
    return Backfills(
        runtime.sessions, runtime.outbox, runtime.clock,
        instance_id=runtime.settings.scheduler_instance_id,
        active_run_timeout=timedelta(seconds=runtime.settings.scheduler_active_run_timeout_seconds),
    )


def get_runtime(request: Request) -> SchedulerRuntime:
    return request.app.state.runtime


Service = Annotated[Backfills, Depends(get_backfills)]
Runtime = Annotated[SchedulerRuntime, Depends(get_runtime)]


def _known(workflow_id: str) -> None:
    if workflow_id not in CATALOGUE:
        raise HTTPException(404, f"unknown workflow {workflow_id!r}; known: {', '.join(sorted(CATALOGUE))}")


def build_backfills_router(require_token: Callable) -> APIRouter:
    router = APIRouter(prefix="/api/workflows", tags=["backfills"])
    mutating = [Depends(require_token)]
    # 401 only happens when a token is set; documenting it always keeps one document.
    unauthorized = error_responses(401)

    @router.post("/{workflow_id}/backfills", status_code=202, response_model=BackfillAccepted, dependencies=mutating,
                 responses=UNKNOWN_WORKFLOW | unauthorized | error_responses(
                     422, e422="invalid body, or a range without sessions to run (the reason says which)"))
    async def submit_backfill(workflow_id: WorkflowId, body: BackfillRequest, service: Service) -> BackfillAccepted:
        """One run per trading session from start to end, each as of its session's close
        (`params.as_of`), with execution id `backfill-<workflow>-<YYYYMMDD>`: a session
        whose run was requested before is not run again. Runs are released
        `max_active_runs` at a time; the ledger records each."""
        _known(workflow_id)
        try:
            params = validated_params(body.params) if body.params is not None else {}
            submitted = await service.submit(
                workflow_id, start=body.start, end=body.end, params=params, max_active_runs=body.max_active_runs
            )
        except (BackfillError, ScheduleError) as exc:
            raise HTTPException(422, str(exc)) from None
        if submitted is None:
            raise HTTPException(404, f"workflow {workflow_id!r} has no schedule yet")
        backfill_id, planned = submitted
        return BackfillAccepted(
            backfill_id=backfill_id, workflow_id=workflow_id, planned=planned,
            status_url=f"/api/workflows/{workflow_id}/backfills/{backfill_id}",
        )

    @router.get("/{workflow_id}/backfills", response_model=BackfillList, responses=UNKNOWN_WORKFLOW)
    async def list_backfills(
        workflow_id: WorkflowId, runtime: Runtime, service: Service,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> BackfillList:
        """The workflow's backfills, newest first, with their counts."""
        _known(workflow_id)
        async with runtime.sessions() as session:
            rows = list(await session.scalars(
                select(Backfill).where(Backfill.workflow_id == workflow_id)
                .order_by(Backfill.created_at.desc()).limit(limit)
            ))
            counts = await service.counts(session, [row.backfill_id for row in rows])
        return BackfillList(backfills=[backfill_view(row, counts[row.backfill_id]) for row in rows])

    @router.get("/{workflow_id}/backfills/{backfill_id}", response_model=BackfillView, responses=UNKNOWN_BACKFILL)
    async def get_backfill(
        workflow_id: WorkflowId, backfill_id: BackfillId, runtime: Runtime, service: Service,
        runs: Annotated[bool, Query(description="list every session and its run")] = False,
    ) -> BackfillView:
        """Planned, queued, running, succeeded, partial, failed and cancelled counts."""
        async with runtime.sessions() as session:
            row = await session.get(Backfill, backfill_id)
            if row is None or row.workflow_id != workflow_id:
                raise HTTPException(404, f"workflow {workflow_id!r} has no backfill {backfill_id!r}")
            counts = (await service.counts(session, [backfill_id]))[backfill_id]
            listed = None
            if runs:
                listed = [
                    BackfillRunView(as_of=run.session_date, execution_id=run.execution_id,
                                    state=run_state(run.state, tracked),
                                    requested_by_this_backfill=run.state != "existing")
                    for run, tracked in await service.runs(session, backfill_id)
                ]
        return backfill_view(row, counts, listed)

    @router.post("/{workflow_id}/backfills/{backfill_id}/cancel", response_model=BackfillView,
                 dependencies=mutating, responses=UNKNOWN_BACKFILL | unauthorized | error_responses(
                     409, e409="every run of the backfill was requested already: nothing left to cancel"))
    async def cancel_backfill(
        workflow_id: WorkflowId, backfill_id: BackfillId, runtime: Runtime, service: Service
    ) -> BackfillView:
        """Sessions not requested yet are not requested any more; requested runs go on to their end."""
        try:
            found = await service.cancel(workflow_id, backfill_id)
        except NothingToCancel as exc:
            raise HTTPException(409, str(exc)) from None
        if not found:
            raise HTTPException(404, f"workflow {workflow_id!r} has no backfill {backfill_id!r}")
        return await get_backfill(workflow_id, backfill_id, runtime, service)

    @router.post("/{workflow_id}/scorecard/runs", status_code=202, response_model=ScorecardRequested,
                 dependencies=mutating, responses=UNKNOWN_WORKFLOW | unauthorized)
    async def request_scorecard(workflow_id: WorkflowId, service: Service) -> ScorecardRequested:
        """Score the workflow's stored signals again now (a run of its scorecard workflow);
        `GET /api/workflows/{workflow_id}/scorecard` answers with the latest scorecard."""
        _known(workflow_id)
        execution_id = await service.request_scorecard(workflow_id)
        return ScorecardRequested(
            execution_id=execution_id, workflow_id=scorecard_workflow_id(workflow_id), scores=workflow_id
        )

    return router

