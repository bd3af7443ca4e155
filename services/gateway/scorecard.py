"""A workflow's scorecard and backfills in the gateway: `GET /api/workflows/{id}/scorecard`
(the latest `scorecard` artifact of the workflow's scorecard workflow, composed from the
artifacts API), the page `/workflows/{id}/scorecard`, and the backfills fragment the
workflows page refreshes while a backfill runs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError

from services.gateway.downstream import DownstreamError, DownstreamUnavailable, Services
from services.gateway.openapi import GATEWAY_ERRORS
from services.gateway.pages import problem
from services.gateway.scorecard_chart import curve_svg, percent
from shared.http import error_body, error_responses
from shared.scorecard import SCORECARD_KIND, Scorecard, scorecard_workflow_id

router = APIRouter()

# A workflow id with room for the `.scorecard` of its scorecard workflow's.
WorkflowId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,117}$",
                                 description="e.g. ibkr_trading_signal_workflow")]
RECENT_SIGNALS = 40
BACKFILLS_SHOWN = 5


class ScorecardDocument(Scorecard):
    """The latest scorecard, with where it comes from."""

    artifact_id: str
    execution_id: str
    created_at: str
    unpriced_symbols: dict[str, str] = {}


async def latest_scorecard(services: Services, workflow_id: str) -> dict[str, Any] | None:
    """The newest scorecard artifact's payload and provenance; None when there is none."""
    listing = await services.get_json(services.artifacts, "/api/artifacts/", params={
        "workflow_id": scorecard_workflow_id(workflow_id), "kind": SCORECARD_KIND, "limit": 1})
    found = listing.get("artifacts") or []
    if not found:
        return None
    artifact_path = f"/api/artifacts/{quote(str(found[0]['artifact_id']), safe='')}"
    artifact = await services.get_json(services.artifacts, artifact_path)
    payload = artifact.get("payload")
    if payload is None:
        payload = await services.get_json(services.artifacts, artifact_path + "/content")
    return {
        **(payload if isinstance(payload, dict) else {"payload": payload}),
        "artifact_id": str(artifact.get("artifact_id")),
        "execution_id": artifact.get("execution_id"),
        "created_at": artifact.get("created_at"),
    }


def _no_scorecard(workflow_id: str) -> str:
    return (f"no scorecard of {workflow_id} yet: backfill it (POST /api/workflows/{workflow_id}/backfills) "
            f"or score its signals now (POST /api/workflows/{workflow_id}/scorecard/runs)")


@router.get(
    "/api/workflows/{workflow_id}/scorecard", tags=["scorecard"], response_model=ScorecardDocument,
    responses=error_responses(404, e404="no scorecard of this workflow yet")
    | {code: response for code, response in GATEWAY_ERRORS.items() if code != 403},
    summary="The latest scorecard of the workflow's signals",
)
async def get_scorecard(request: Request, workflow_id: WorkflowId) -> JSONResponse:
    """How the workflow's published signals turned out: forward returns at 1, 5 and 20
    sessions (null until known), hits, a summary per symbol, action and horizon, curves
    against buy-and-hold, and labels (data used, costs ignored, not yet scorable)."""
    services: Services = request.app.state.services
    try:
        found = await latest_scorecard(services, workflow_id)
    except DownstreamError as exc:
        # e.g. the artifact went (retention) between the listing and the read
        status = 404 if exc.status == 404 else 502
        return JSONResponse(error_body(status, f"the artifacts service answered {exc.status}: {exc.message}"),
                            status_code=status)
    if found is None:
        return JSONResponse(error_body(404, _no_scorecard(workflow_id)), status_code=404)
    return JSONResponse(found)


# --- the page ----------------------------------------------------------------------------


def scorecard_view(found: dict[str, Any]) -> dict[str, Any]:
    """What the template shows; raises ValidationError for a scorecard it cannot read.
    Fields it does not know are left aside, so a newer scorecard still renders."""
    known = {key: found[key] for key in Scorecard.model_fields if key in found}
    scorecard = Scorecard.model_validate(known)
    horizons = scorecard.horizons
    grouped: dict[tuple[str, str], dict[int, Any]] = defaultdict(dict)
    for row in scorecard.summary:
        grouped[(row.symbol, row.action)][row.horizon] = row
    summary = [
        {"symbol": symbol, "action": action, "cells": [by_horizon.get(h) for h in horizons]}
        for (symbol, action), by_horizon in grouped.items()
    ]
    recent = sorted(scorecard.signals, key=lambda s: (s.as_of, s.symbol), reverse=True)[:RECENT_SIGNALS]
    curves = [
        {"symbol": curve.symbol,
         "svg": curve_svg(curve.symbol, [(p.date, p.signals, p.buy_and_hold) for p in curve.points]),
         "signals": curve.points[-1].signals if curve.points else None,
         "buy_and_hold": curve.points[-1].buy_and_hold if curve.points else None}
        for curve in scorecard.curves
    ]
    return {"scorecard": scorecard, "summary": summary, "recent": recent, "curves": curves,
            "unpriced": found.get("unpriced_symbols") or {}}


def _pct(value: Any) -> str:
    return percent(value) if isinstance(value, int | float) and not isinstance(value, bool) else "—"


def _rate(value: Any) -> str:
    return f"{value * 100:.0f}%" if isinstance(value, int | float) and not isinstance(value, bool) else "—"


@router.get("/workflows/{workflow_id}/scorecard", response_class=HTMLResponse, include_in_schema=False)
async def scorecard_page(request: Request, workflow_id: str) -> Response:
    services: Services = request.app.state.services
    context: dict[str, Any] = {
        "section": "workflows", "workflow_id": workflow_id, "found": None, "view": None, "error": None,
        "unreadable": None, "pct": _pct, "rate": _rate, "missing": _no_scorecard(workflow_id),
    }
    status = 200
    try:
        context["found"] = await latest_scorecard(services, workflow_id)
    except (DownstreamUnavailable, DownstreamError) as exc:
        context["error"], status = problem(exc), exc.status
    if context["found"] is not None:
        try:
            context["view"] = scorecard_view(context["found"])
        except ValidationError as exc:
            context["unreadable"] = f"{exc.error_count()} problem(s), the first: {exc.errors()[0]['msg']}"
    elif context["error"] is None:
        status = 404
    return request.app.state.templates.page(request, "scorecard.html", context, status)


@router.get("/ui/workflows/{workflow_id}/backfills", response_class=HTMLResponse, include_in_schema=False)
async def backfills_fragment(request: Request, workflow_id: str) -> Response:
    services: Services = request.app.state.services
    templates = request.app.state.templates
    try:
        listing = await services.get_json(services.scheduler, f"/api/workflows/{quote(workflow_id, safe='')}/backfills",
                                          params={"limit": BACKFILLS_SHOWN})
    except (DownstreamUnavailable, DownstreamError) as exc:
        return templates.fragment("_problem.html", {"error": problem(exc)}, exc.status)
    backfills = [b for b in listing.get("backfills", []) if isinstance(b, dict)]
    return templates.fragment("_backfills.html", {"backfills": backfills, "workflow_id": workflow_id})
