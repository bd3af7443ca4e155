"""The web UI: pages rendered on the server from the services' API, plus the small
HTML fragments and the live log stream the pages' script asks for (under `/ui/`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sse_starlette import EventSourceResponse

from services.gateway import artifact_views
from services.gateway.downstream import DownstreamError, DownstreamUnavailable, Services, error_of
from services.gateway.formatting import is_active, parse_time
from services.gateway.log_lines import log_line, matches
from services.gateway.sse import sse_events, sse_lines
from services.gateway.templating import Templates
from shared import bounded_json

router = APIRouter(include_in_schema=False)

KNOWN_KINDS = ("dataset", "features", "model", "signals", "chart", "report", "metrics")
ARTIFACT_FILTERS = ("workflow_id", "execution_id", "step_name", "kind", "dag_id", "task_id")
RUN_FILTERS = ("workflow_id", "status", "trigger")
LOG_PAGE = 200
RUN_ARTIFACTS_LIMIT = 500


def _services(request: Request) -> Services:
    return request.app.state.services


def _templates(request: Request) -> Templates:
    return request.app.state.templates


def problem(exc: DownstreamUnavailable | DownstreamError) -> dict[str, str]:
    if isinstance(exc, DownstreamUnavailable):
        return {"message": f"The {exc.service.name} service is not answering", "reason": exc.reason,
                "hint": "See /health for the state of every component."}
    return {"message": exc.message, "reason": f"{exc.service.name} answered {exc.status}", "hint": ""}


def _query(params: dict[str, Any]) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def _rfc3339(value: str | None) -> str | None:
    """A `datetime-local` value (no offset, read as UTC) or an RFC 3339 time."""
    parsed = parse_time(value) if value else None
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z") if parsed else None


def _local_input(value: str | None) -> str | None:
    parsed = parse_time(value) if value else None
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if parsed else None


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/runs", status_code=307)


# --- artifacts -------------------------------------------------------------------------


@router.get("/artifacts", response_class=HTMLResponse)
async def artifacts_page(
    request: Request,
    view: str = "list",
    cursor: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
) -> Response:
    services = _services(request)
    view = "executions" if view == "executions" else "list"
    filters = {name: request.query_params.get(name) or None for name in ARTIFACT_FILTERS}
    filters["created_after"], filters["created_before"] = _rfc3339(created_after), _rfc3339(created_before)
    filtered = any(filters.values())
    path = "/api/artifacts/by-execution" if view == "executions" else "/api/artifacts/"
    context: dict[str, Any] = {
        "section": "artifacts", "view": view, "filtered": filtered, "error": None, "total": 0, "total_text": "0",
        "artifacts": [], "executions": [], "next_url": None, "first_url": None, "next_fire": None,
        "known_kinds": KNOWN_KINDS, "known_steps": (),
        "filters": {**filters, "created_after_local": _local_input(created_after),
                    "created_before_local": _local_input(created_before)},
    }
    status = 200
    try:
        data = await services.get_json(services.artifacts, path, params={**filters, "cursor": cursor, "limit": 50})
    except (DownstreamUnavailable, DownstreamError) as exc:
        context["error"], status = problem(exc), exc.status
    else:
        context["total"] = data.get("total", 0)
        context["total_text"] = count_text(context["total"], exact=data.get("total_is_exact", True) is not False)
        context["artifacts"] = data.get("artifacts", [])
        context["executions"] = data.get("executions", [])
        steps = (a.get("step_name") for a in context["artifacts"])
        context["known_steps"] = sorted({step for step in steps if isinstance(step, str) and step})
        query = {**filters, "view": view}
        if data.get("next_cursor"):
            context["next_url"] = "/artifacts?" + _query({**query, "cursor": data["next_cursor"]})
        if cursor:
            context["first_url"] = "/artifacts?" + _query(query)
        if context["total"] == 0 and not filtered:
            context["next_fire"] = await _next_fire(services)

    def view_url(name: str) -> str:
        return "/artifacts?" + _query({**filters, "view": name})

    context["view_url"] = view_url
    return _templates(request).page(request, "artifacts.html", context, status)


def count_text(total: Any, exact: bool) -> str:
    """A list's total as a person reads it: "10,000+" when the service stopped counting
    at its cap (its `total_is_exact` is false)."""
    if not isinstance(total, int) or isinstance(total, bool):
        return str(total)
    return f"{total:,}" + ("" if exact else "+")


async def _next_fire(services: Services) -> dict[str, Any] | None:
    """The soonest scheduled run, for the empty state; nothing if the scheduler is away."""
    try:
        data = await services.get_json(services.scheduler, "/api/workflows", timeout=2.0)
    except (DownstreamUnavailable, DownstreamError):
        return None
    upcoming = [
        {"workflow_id": wf.get("workflow_id"), "at": times[0], "paused": (wf.get("schedule") or {}).get("paused")}
        for wf in data.get("workflows", []) if (times := wf.get("next_fire_times"))
    ]
    return min(upcoming, key=lambda u: parse_time(u["at"]) or parse_time("9999-01-01T00:00:00Z"), default=None)


@router.get("/ui/artifacts", response_class=HTMLResponse)
async def artifact_rows(request: Request, execution_id: str = Query(min_length=1)) -> Response:
    services = _services(request)
    try:
        data = await services.get_json(services.artifacts, "/api/artifacts/",
                                       params={"execution_id": execution_id, "limit": RUN_ARTIFACTS_LIMIT})
    except (DownstreamUnavailable, DownstreamError) as exc:
        return _templates(request).fragment("_problem.html", {"error": problem(exc)}, exc.status)
    return _templates(request).fragment("_artifact_rows.html", {"artifacts": data.get("artifacts", [])})


@router.get("/artifacts/{artifact_id}", response_class=HTMLResponse)
async def artifact_page(request: Request, artifact_id: str) -> Response:
    services = _services(request)
    templates = _templates(request)
    try:
        artifact = await services.get_json(services.artifacts, f"/api/artifacts/{quote(artifact_id, safe='')}")
    except DownstreamError as exc:
        if exc.status in (404, 422, 400):
            return templates.page(request, "error.html", {
                "section": "artifacts", "title": "Artifact not found",
                "message": f"There is no artifact {artifact_id!r}.", "hint": exc.message,
                "back_url": "/artifacts", "back_label": "All artifacts"}, 404)
        return templates.page(request, "error.html", {
            "section": "artifacts", "title": "Artifact unavailable", "message": exc.message,
            "back_url": "/artifacts", "back_label": "All artifacts"}, exc.status)
    except DownstreamUnavailable as exc:
        return templates.page(request, "error.html", {
            "section": "artifacts", "title": "Artifact unavailable", "message": str(exc),
            "hint": "See /health for the state of every component.", "back_url": "/artifacts",
            "back_label": "All artifacts"}, exc.status)
    renderer = artifact_views.choose_renderer(artifact)
    value, error = artifact.get("payload"), None
    view = None
    if artifact_views.needs_content(artifact, renderer):
        limit = request.app.state.settings.preview_max_bytes
        size = artifact.get("size_bytes")
        if isinstance(size, int) and size > limit:
            view = artifact_views.download_view(artifact, "This content is too large to show in the page")
        else:
            try:
                value = artifact_views.decode_content(artifact, await _content(services, artifact, limit))
            except (DownstreamUnavailable, DownstreamError) as exc:
                error = problem(exc)
                view = artifact_views.download_view(artifact, "The content could not be read")
    if view is None:
        view = artifact_views.render_artifact(artifact, value, renderer)
    return templates.page(request, "artifact.html", {
        "section": "artifacts", "artifact": artifact, "view": view, "error": error,
        "content_url": artifact_views.content_url(artifact),
    })


async def _content(services: Services, artifact: dict, limit: int) -> bytes:
    service = services.artifacts
    url = service.url(f"/api/artifacts/{quote(str(artifact['artifact_id']), safe='')}/content")
    try:
        async with services.client.stream("GET", url) as response:
            if response.status_code >= 400:
                await response.aread()
                raise error_of(service, response)
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    break
            return b"".join(chunks)[:limit]
    except httpx.HTTPError as exc:
        raise DownstreamUnavailable(service, exc) from exc


# --- runs ------------------------------------------------------------------------------


async def _runs_context(request: Request, cursor: str | None) -> tuple[dict[str, Any], int]:
    services = _services(request)
    filters = {name: request.query_params.get(name) or None for name in RUN_FILTERS}
    context: dict[str, Any] = {
        "filters": filters, "filtered": any(filters.values()), "runs": [], "error": None,
        "next_url": None, "first_url": None, "any_active": False,
        "refresh_url": "/ui/runs?" + _query({**filters, "cursor": cursor}),
    }
    try:
        data = await services.get_json(services.artifacts, "/api/runs",
                                       params={**filters, "cursor": cursor, "limit": 50})
    except (DownstreamUnavailable, DownstreamError) as exc:
        context["error"] = problem(exc)
        return context, exc.status
    context["runs"] = data.get("runs", [])
    context["any_active"] = any(is_active(r.get("status")) for r in context["runs"])
    if data.get("next_cursor"):
        context["next_url"] = "/runs?" + _query({**filters, "cursor": data["next_cursor"]})
    if cursor:
        context["first_url"] = "/runs?" + _query(filters)
    return context, 200


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(request: Request, cursor: str | None = None) -> Response:
    services = _services(request)
    (context, status), workflows = await asyncio.gather(_runs_context(request, cursor), _workflows(services))
    context.update(section="runs", workflows=workflows)
    return _templates(request).page(request, "runs.html", context, status)


async def _workflows(services: Services) -> list[dict]:
    try:
        return (await services.get_json(services.scheduler, "/api/workflows")).get("workflows", [])
    except (DownstreamUnavailable, DownstreamError):
        return []


@router.get("/ui/runs", response_class=HTMLResponse)
async def runs_table(request: Request, cursor: str | None = None) -> Response:
    context, status = await _runs_context(request, cursor)
    if context["error"]:
        return _templates(request).fragment("_problem.html", context, status)
    return _templates(request).fragment("_runs_table.html", context)


async def _run(services: Services, execution_id: str) -> dict | None:
    try:
        return await services.get_json(services.artifacts, f"/api/runs/{quote(execution_id, safe='')}")
    except DownstreamError as exc:
        if exc.status == 404:
            return None
        raise


async def _run_artifacts(services: Services, execution_id: str) -> list[dict]:
    data = await services.get_json(services.artifacts, "/api/artifacts/",
                                   params={"execution_id": execution_id, "limit": RUN_ARTIFACTS_LIMIT})
    return data.get("artifacts", [])


def _by_step(artifacts: list[dict]) -> dict[str | None, list[dict]]:
    grouped: dict[str | None, list[dict]] = defaultdict(list)
    for artifact in artifacts:
        grouped[artifact.get("step_name")].append(artifact)
    return grouped


def _summary_context(run: dict, artifacts: list[dict]) -> dict[str, Any]:
    by_step = _by_step(artifacts)
    known_steps = {s.get("step_name") for s in run.get("steps") or []}
    orphans = [a for step, items in by_step.items() if step not in known_steps for a in items]
    grouped = {step: items for step, items in by_step.items() if step in known_steps}
    if orphans:
        grouped[None] = orphans
    return {"run": run, "artifacts_by_step": grouped}


def _log_params(level: str | None, step: str | None, q: str | None, cursor: str | None = None) -> dict[str, Any]:
    return {"level": level, "step": step, "q": q, "cursor": cursor, "limit": LOG_PAGE}


@router.get("/runs/{execution_id}", response_class=HTMLResponse)
async def run_page(
    request: Request, execution_id: str, level: str | None = None, step: str | None = None,
    q: str | None = None, artifact: str | None = None,
) -> Response:
    services = _services(request)
    logs_path = f"/api/runs/{quote(execution_id, safe='')}/logs"
    context: dict[str, Any] = {
        "section": "runs", "execution_id": execution_id, "run": None, "error": None, "logs_error": None,
        "log_lines": [], "logs_next_cursor": None, "find": None,
        "log_filters": {"level": level, "step": step, "q": q}, "artifacts_by_step": {},
    }
    results = await asyncio.gather(
        _run(services, execution_id),
        _run_artifacts(services, execution_id),
        services.get_json(services.artifacts, logs_path, params=_log_params(level, step, q)),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, (DownstreamUnavailable, DownstreamError)):
            raise result
    run, artifacts, logs = results
    if isinstance(run, Exception):
        context["error"] = problem(run)
        return _templates(request).page(request, "run.html", context, run.status)
    if run is None:
        # Requested but not recorded yet: the page waits for it.
        return _templates(request).page(request, "run.html", context, 404)
    if isinstance(artifacts, Exception):
        context["error"], artifacts = problem(artifacts), []
    context.update(_summary_context(run, artifacts))
    if isinstance(logs, Exception):
        context["logs_error"] = problem(logs)
    else:
        context["log_lines"] = [log_line(r, execution_id) for r in logs.get("logs", [])]
        context["logs_next_cursor"] = logs.get("next_cursor")
    if artifact:
        found = next((a for a in artifacts if str(a.get("artifact_id")) == artifact), None)
        if found:
            context["find"] = {
                "targets": [str(found["artifact_id"]).lower(), f"{found.get('step_name') or ''}/{found.get('name')}"],
                "step": found.get("step_name"),
            }
    return _templates(request).page(request, "run.html", context)


@router.get("/ui/runs/{execution_id}/summary", response_class=HTMLResponse)
async def run_summary(request: Request, execution_id: str) -> Response:
    services = _services(request)
    try:
        run, artifacts = await asyncio.gather(_run(services, execution_id), _run_artifacts(services, execution_id))
    except (DownstreamUnavailable, DownstreamError) as exc:
        return _templates(request).fragment("_problem.html", {"error": problem(exc)}, exc.status)
    if run is None:
        return Response(status_code=404)
    return _templates(request).fragment("_run_summary.html", _summary_context(run, artifacts))


@router.get("/ui/runs/{execution_id}/log-lines", response_class=HTMLResponse)
async def log_page(
    request: Request, execution_id: str, level: str | None = None, step: str | None = None,
    q: str | None = None, cursor: str | None = None,
) -> Response:
    services = _services(request)
    try:
        logs = await services.get_json(services.artifacts, f"/api/runs/{quote(execution_id, safe='')}/logs",
                                       params=_log_params(level, step, q, cursor))
    except (DownstreamUnavailable, DownstreamError) as exc:
        return _templates(request).fragment("_problem.html", {"error": problem(exc)}, exc.status)
    lines = [log_line(r, execution_id) for r in logs.get("logs", [])]
    response = _templates(request).fragment("_log_lines.html", {"log_lines": lines})
    response.headers["x-next-cursor"] = _header_value(logs.get("next_cursor"))
    response.headers["x-last-id"] = _header_value(lines[-1].id) if lines else ""
    return response


def _header_value(value: Any) -> str:
    """A cursor or id as a header value; anything a header cannot carry (or that no API
    sends) as nothing, so the page stops paging instead of failing."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if abs(value) < 2**63 else ""
    if isinstance(value, str) and value.isascii() and value.isprintable() and len(value) <= 1000:
        return value
    return ""


@router.get("/ui/runs/{execution_id}/log-stream")
async def log_stream(
    request: Request, execution_id: str, after: str | None = None, level: str | None = None,
    step: str | None = None, q: str | None = None,
) -> EventSourceResponse:
    """The run's live log stream with each record rendered as its log line."""
    services = _services(request)
    templates = _templates(request)
    after = request.headers.get("last-event-id") or after
    service = services.artifacts
    url = service.url(f"/api/runs/{quote(execution_id, safe='')}/logs/stream")

    async def events() -> AsyncIterator[dict[str, Any]]:
        yield {"retry": 2000, "comment": "ibflow log stream"}
        try:
            # The contract promises only `after`; filters are passed on and applied here too.
            params = {k: v for k, v in {"after": after, "level": level, "step": step, "q": q}.items() if v}
            async with services.client.stream(
                "GET", url, params=params,
                headers={"accept": "text/event-stream"},
                timeout=httpx.Timeout(None, connect=services.client.timeout.connect),
            ) as response:
                if response.status_code != 200:
                    yield {"event": "unavailable", "data": f"the log stream answered {response.status_code}"}
                    return
                async for event, data in sse_events(sse_lines(response.aiter_text())):
                    if event == "end":
                        yield {"event": "end", "data": "the run has ended"}
                        return
                    record = _record(data)
                    if record is None:
                        continue
                    if matches(record, level=level, step=step, q=q):
                        line = log_line(record, execution_id)
                        html = templates.macro("log_line", line)
                        yield {"event": "line", "id": _header_value(line.id), "data": html}
        except httpx.HTTPError as exc:
            yield {"event": "unavailable", "data": str(DownstreamUnavailable(service, exc))}

    return EventSourceResponse(events(), ping=15)


def _record(data: str) -> dict[str, Any] | None:
    try:
        record = bounded_json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "id" in record else None


@router.get("/ui/runs/{execution_id}/artifact")
async def artifact_by_name(request: Request, execution_id: str, name: str, step: str | None = None) -> Response:
    """Where a log line's mention of an artifact by name leads: that artifact's page."""
    services = _services(request)
    try:
        data = await services.get_json(services.artifacts, "/api/artifacts/", params={
            "execution_id": execution_id, "step_name": step, "limit": RUN_ARTIFACTS_LIMIT})
    except (DownstreamUnavailable, DownstreamError) as exc:
        return _templates(request).page(request, "error.html", {
            "section": "runs", "title": "Artifact unavailable", "message": problem(exc)["message"],
            "back_url": f"/runs/{quote(execution_id, safe='')}", "back_label": "Back to the run"}, exc.status)
    found = next((a for a in data.get("artifacts", []) if a.get("name") == name), None)
    if found is None:
        return _templates(request).page(request, "error.html", {
            "section": "runs", "title": "Artifact not found",
            "message": f"Run {execution_id} has no artifact named {name!r}" + (f" in step {step}." if step else "."),
            "back_url": f"/runs/{quote(execution_id, safe='')}", "back_label": "Back to the run"}, 404)
    return RedirectResponse(f"/artifacts/{quote(str(found['artifact_id']), safe='')}", status_code=302)


# --- workflows -------------------------------------------------------------------------


@router.get("/workflows", response_class=HTMLResponse)
async def workflows_page(request: Request) -> Response:
    services = _services(request)
    context: dict[str, Any] = {"section": "workflows", "workflows": [], "error": None}
    try:
        workflows = (await services.get_json(services.scheduler, "/api/workflows")).get("workflows", [])
    except (DownstreamUnavailable, DownstreamError) as exc:
        context["error"] = problem(exc)
        return _templates(request).page(request, "workflows.html", context, exc.status)
    ledgers = await asyncio.gather(
        *(services.get_json(services.scheduler, f"/api/workflows/{quote(wf['workflow_id'], safe='')}/ledger",
                            params={"limit": 10}) for wf in workflows),
        return_exceptions=True,
    )
    for workflow, ledger in zip(workflows, ledgers):
        item: dict[str, Any] = {"workflow": workflow, "ledger": [], "ledger_error": None}
        if isinstance(ledger, (DownstreamUnavailable, DownstreamError)):
            item["ledger_error"] = f"The ledger could not be read: {ledger}"
        elif isinstance(ledger, BaseException):
            raise ledger
        else:
            item["ledger"] = ledger.get("entries", [])
        context["workflows"].append(item)
    return _templates(request).page(request, "workflows.html", context)
