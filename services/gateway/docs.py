"""`/openapi.json` and `/docs` (the whole HTTP API), `/asyncapi.json` and `/asyncapi`
(the event contract)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from services.gateway import schema_docs
from shared import topics

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(await request.app.state.openapi.document())


@router.get("/docs", response_class=HTMLResponse)
async def api_reference(request: Request) -> HTMLResponse:
    document = await request.app.state.openapi.document()
    return request.app.state.templates.page(request, "docs.html", {
        "section": "docs",
        "info": document.get("info", {}),
        "groups": schema_docs.operations_by_tag(document),
        "schemas": schema_docs.component_schemas(document),
    })


@router.get("/asyncapi.json")
async def asyncapi_document(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.asyncapi)


@router.get("/asyncapi", response_class=HTMLResponse)
async def event_reference(request: Request) -> HTMLResponse:
    document = request.app.state.asyncapi
    channels = schema_docs.channels(document, list(topics.ALL_TOPICS))
    shown = {doc.name for channel in channels for doc in channel.payload}
    return request.app.state.templates.page(request, "asyncapi.html", {
        "section": "events",
        "info": document.get("info", {}),
        "servers": document.get("servers", {}),
        "channels": channels,
        # What events refer to (e.g. RunParams); the per-topic unions are already spelled out.
        "schemas": [doc for doc in schema_docs.component_schemas(document)
                    if doc.name not in shown and not doc.name.endswith(":Payload")],
        "artifacts_topic": topics.ARTIFACTS,
    })
