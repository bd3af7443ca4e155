"""`/api/workflows`: the catalogue with schedules, schedule edits, manual runs, the ledger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler import ledger
from services.scheduler.api_schemas import (
    LedgerPage,
    RunAccepted,
    RunRequestBody,
    ScheduleUpdate,
    WorkflowList,
    WorkflowView,
    ledger_entry_view,
    workflow_view,
)
from services.scheduler.catalogue import CATALOGUE, WorkflowDefinition
from services.scheduler.cron import ScheduleError
from services.scheduler.manual_runs import request_manual_run
from services.scheduler.rows import Schedule
from services.scheduler.runtime import SchedulerRuntime
from services.scheduler.schedules import schedule_policy, update_schedule, validated_changes
from services.scheduler.slot_decisions import Outcome, next_fire_times
from shared.events import WORKFLOW_ID_PATTERN
from shared.http import error_responses
from shared.http_params import BIGINT_DIGITS, bigint_of, text_query

DEFAULT_FIRE_TIMES = 5
MAX_FIRE_TIMES = 100


def get_runtime(request: Request) -> SchedulerRuntime:
    return request.app.state.runtime


Runtime = Annotated[SchedulerRuntime, Depends(get_runtime)]
FireTimeCount = Annotated[
    int, Query(ge=0, le=MAX_FIRE_TIMES, description="how many next fire times to list")
]
WorkflowId = Annotated[str, Path(pattern=WORKFLOW_ID_PATTERN, description="e.g. ibkr_trading_signal_workflow")]
# A ledger cursor is the id of the last entry of a page: any such number is a valid
# place to continue from.
LedgerCursor = Annotated[
    str | None, Query(pattern=rf"^{BIGINT_DIGITS}$", description="next_cursor of the previous page")
]
UNKNOWN_WORKFLOW = error_responses(404, e404="unknown workflow, or it has no schedule yet")


def _definition(workflow_id: str) -> WorkflowDefinition:
    definition = CATALOGUE.get(workflow_id)
    if definition is None:
        raise HTTPException(
            status_code=404, detail=f"unknown workflow {workflow_id!r}; known: {', '.join(sorted(CATALOGUE))}"
        )
    return definition


async def _view(runtime: SchedulerRuntime, session: AsyncSession, workflow_id: str, count: int) -> WorkflowView:
    definition = _definition(workflow_id)
    row = await session.get(Schedule, workflow_id, populate_existing=True)
    if row is None:
        raise HTTPException(status_code=404, detail=f"workflow {workflow_id!r} has no schedule yet")
    times = next_fire_times(schedule_policy(row), after=runtime.clock.now(), count=count)
    return workflow_view(definition, row, times)


def build_router(require_token: Callable) -> APIRouter:
    router = APIRouter(prefix="/api/workflows", tags=["workflows"])
    mutating = [Depends(require_token)]
    # 401 only happens when a token is set; documenting it always keeps one document.
    mutating_errors = UNKNOWN_WORKFLOW | error_responses(401)

    @router.get("", response_model=WorkflowList)
    async def list_workflows(runtime: Runtime, count: FireTimeCount = DEFAULT_FIRE_TIMES) -> WorkflowList:
        async with runtime.sessions() as session:
            ids = [wid for wid in sorted(CATALOGUE) if await session.get(Schedule, wid) is not None]
            return WorkflowList(workflows=[await _view(runtime, session, wid, count) for wid in ids])

    @router.get("/{workflow_id}", response_model=WorkflowView, responses=UNKNOWN_WORKFLOW)
    async def get_workflow(workflow_id: WorkflowId, runtime: Runtime, count: FireTimeCount = DEFAULT_FIRE_TIMES) -> WorkflowView:
        async with runtime.sessions() as session:
            return await _view(runtime, session, workflow_id, count)

    async def _apply(runtime: SchedulerRuntime, workflow_id: str, changes: dict) -> WorkflowView:
        _definition(workflow_id)
        try:
            clean = validated_changes(changes)
        except ScheduleError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        async with runtime.sessions.begin() as session:
            row = await update_schedule(session, workflow_id, clean, now=runtime.clock.now())
            if row is None:
                raise HTTPException(status_code=404, detail=f"workflow {workflow_id!r} has no schedule yet")
        async with runtime.sessions() as session:
            return await _view(runtime, session, workflow_id, DEFAULT_FIRE_TIMES)

    @router.patch("/{workflow_id}/schedule", response_model=WorkflowView, dependencies=mutating,
                  responses=mutating_errors)
    async def patch_schedule(workflow_id: WorkflowId, update: ScheduleUpdate, runtime: Runtime) -> WorkflowView:
        """Partial update; effective at the scheduler's next tick (about a second), no restart."""
        return await _apply(runtime, workflow_id, update.changes())

    @router.post("/{workflow_id}/pause", response_model=WorkflowView, dependencies=mutating,
                 responses=mutating_errors)
    async def pause(workflow_id: WorkflowId, runtime: Runtime) -> WorkflowView:
        """Slots while paused are skipped and recorded in the ledger."""
        return await _apply(runtime, workflow_id, {"paused": True})

    @router.post("/{workflow_id}/resume", response_model=WorkflowView, dependencies=mutating,
                 responses=mutating_errors)
    async def resume(workflow_id: WorkflowId, runtime: Runtime) -> WorkflowView:
        return await _apply(runtime, workflow_id, {"paused": False})

    @router.post("/{workflow_id}/runs", status_code=202, response_model=RunAccepted, dependencies=mutating,
                 responses=mutating_errors)
    async def trigger_run(
        workflow_id: WorkflowId, runtime: Runtime, body: Annotated[RunRequestBody | None, Body()] = None
    ) -> RunAccepted:
        """Request a run now, with the schedule's default params overridden by `params`."""
        _definition(workflow_id)
        execution_id = await request_manual_run(
            runtime.sessions, runtime.outbox, runtime.clock,
            workflow_id=workflow_id, params=body.params if body is not None else None,
        )
        if execution_id is None:
            raise HTTPException(status_code=404, detail=f"workflow {workflow_id!r} has no schedule yet")
        return RunAccepted(execution_id=execution_id, workflow_id=workflow_id)

    @router.get("/{workflow_id}/ledger", response_model=LedgerPage, responses=UNKNOWN_WORKFLOW)
    async def get_ledger(
        workflow_id: WorkflowId,
        runtime: Runtime,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: LedgerCursor = None,
        outcome: Outcome | None = None,
        execution_id: Annotated[str | None, text_query(200)] = None,
    ) -> LedgerPage:
        """What happened to each slot and manual trigger, newest first."""
        _definition(workflow_id)
        before = bigint_of(cursor) if cursor else None
        async with runtime.sessions() as session:
            rows = await ledger.entries_page(
                session, workflow_id, limit=limit + 1, before_id=before,
                outcome=str(outcome) if outcome else None, execution_id=execution_id,
            )
        page = rows[:limit]
        next_cursor = str(page[-1].id) if len(rows) > limit else None
        return LedgerPage(entries=[ledger_entry_view(r) for r in page], next_cursor=next_cursor)

    return router
