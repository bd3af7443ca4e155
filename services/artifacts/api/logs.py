"""`/api/runs/{execution_id}/logs`: a run's structured log records, paged or followed live."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from services.artifacts.api import cursors, mapping, schemas
from services.artifacts.api.deps import ExecutionIdDep, RuntimeDep, SessionDep
from services.artifacts.db.models import LOG_LEVELS, TERMINAL_STATUSES, Run
from services.artifacts.queries.logs import LogFilters, list_logs, logs_stored_after
from services.artifacts.runtime import Runtime
from shared.http import error_responses
from shared.event_bounds import MAX_SAFE_INTEGER
from shared.http_params import text_query

router = APIRouter(prefix="/api/runs/{execution_id}/logs", tags=["logs"])

STREAM_BATCH = 500
KEEPALIVE_SECONDS = 15.0


# Any case, as before; the pattern is the whole rule, so `level=` (empty) is refused too.
LEVEL_PATTERN = f"^(?i:{'|'.join(LOG_LEVELS)})$"


def log_filters(
    step: Annotated[str | None, text_query(200, "only this step")] = None,
    level: Annotated[
        str | None,
        Query(pattern=LEVEL_PATTERN, description="minimum level: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)"),
    ] = None,
    q: Annotated[str | None, text_query(200, "text the message contains (any case)", min_length=0)] = None,
) -> LogFilters:
    return LogFilters(step_name=step, min_level=level.upper() if level else None, text=q or None)


FiltersDep = Annotated[LogFilters, Depends(log_filters)]


async def _existing_run(session, execution_id: str) -> Run:
    run = await session.get(Run, execution_id)
    if run is None:
        raise HTTPException(status_code=404, detail=f"no run {execution_id!r}")
    return run


NO_RUN = error_responses(404, e404="no such run")


@router.get("", response_model=schemas.LogPage, responses=NO_RUN)
async def list_logs_route(
    session: SessionDep,
    execution_id: ExecutionIdDep,
    filters: FiltersDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    cursor: Annotated[str | None, cursors.LOGS.query()] = None,
) -> schemas.LogPage:
    await _existing_run(session, execution_id)
    after = cursors.LOGS.decode(cursor) if cursor else None
    records, more = await list_logs(session, execution_id, filters, limit, after)
    next_cursor = cursors.LOGS.encode(records[-1].occurred_at, records[-1].id) if more and records else None
    return schemas.LogPage(logs=[mapping.log_record(r) for r in records], limit=limit, next_cursor=next_cursor)


class OpenStreams:
    """How many live streams this process serves: each polls the database, so there is a cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    @property
    def full(self) -> bool:
        return self.count >= self.limit


def open_streams(request: Request, runtime: RuntimeDep) -> OpenStreams:
    state = request.app.state
    if getattr(state, "log_streams", None) is None:
        state.log_streams = OpenStreams(runtime.settings.artifacts_max_log_streams)
    return state.log_streams


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "one `data:` per log record (JSON)"},
        **NO_RUN,
        **error_responses(429, e429="this process already serves ARTIFACTS_MAX_LOG_STREAMS live streams"),
    },
)
async def stream_logs_route(
    runtime: RuntimeDep,
    streams: Annotated[OpenStreams, Depends(open_streams)],
    execution_id: ExecutionIdDep,
    filters: FiltersDep,
    after: Annotated[int | None, Query(ge=0, le=MAX_SAFE_INTEGER, description="id of the last record already seen")] = None,
    last_event_id: Annotated[
        int | None, Header(ge=0, le=MAX_SAFE_INTEGER, description="sent by EventSource on reconnect")
    ] = None,
) -> StreamingResponse:
    """Server-sent events: every record stored after `after`, then new ones as they are
    stored, and a final `event: end` once the run has finished and its records were sent.

    A stream holds no database connection between its polls (each poll takes one from
    the pool and gives it back), so open streams do not starve other requests."""
    if streams.full:
        raise HTTPException(status_code=429, headers={"Retry-After": "5"},
                            detail=f"too many live log streams ({streams.limit}) open in this process; try again later")
    async with runtime.sessions() as session:
        await _existing_run(session, execution_id)
    start = after if after is not None else last_event_id or 0
    return StreamingResponse(
        _follow(runtime, streams, execution_id, filters, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _follow(
    runtime: Runtime, streams: OpenStreams, execution_id: str, filters: LogFilters, last_id: int
) -> AsyncIterator[str]:
    streams.count += 1
    try:
        async for event in _events(runtime, execution_id, filters, last_id):
            yield event
    finally:
        streams.count -= 1


async def _events(runtime: Runtime, execution_id: str, filters: LogFilters, last_id: int) -> AsyncIterator[str]:
    settings = runtime.settings
    last_write = time.monotonic()
    terminal_seen_at: float | None = None
    yield "retry: 2000\n\n"
    while True:
        async with runtime.sessions() as session:
            records = await logs_stored_after(session, execution_id, filters, last_id, STREAM_BATCH)
            run = await session.get(Run, execution_id)
        for record in records:
            yield f"id: {record.id}\ndata: {mapping.log_record(record).model_dump_json()}\n\n"
            last_id = record.id
        if records:
            last_write = time.monotonic()
            continue
        if run is not None and run.status in TERMINAL_STATUSES:
            terminal_seen_at = terminal_seen_at or time.monotonic()
            finished_ago = (datetime.now(UTC) - run.finished_at).total_seconds() if run.finished_at else 0.0
            waited = time.monotonic() - terminal_seen_at
            if max(finished_ago, waited) >= settings.artifacts_log_stream_grace_seconds:
                end = {"execution_id": execution_id, "status": run.status, "last_id": last_id}
                yield f"event: end\ndata: {json.dumps(end)}\n\n"
                return
        if time.monotonic() - last_write >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_write = time.monotonic()
        await asyncio.sleep(settings.artifacts_log_stream_poll_seconds)
