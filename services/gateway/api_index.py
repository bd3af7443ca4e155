"""`GET /api/`: an index of the API, so the address `ibflow up` prints leads somewhere.

The collections are the entry points a person starts from; `paths` is every public
path of the merged OpenAPI document (the same one `/docs` shows), so the index never
lists less than the API serves.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

router = APIRouter(tags=["gateway"])
HTTP_METHODS = ("get", "put", "post", "patch", "delete", "head", "options")


class Link(BaseModel):
    name: str
    href: str
    description: str


class PathEntry(BaseModel):
    path: str
    methods: list[str]
    summary: str | None = Field(description="the first operation's summary, when it has one")


class ApiIndex(BaseModel):
    name: str
    version: str
    collections: list[Link]
    documentation: list[Link]
    paths: list[PathEntry] = Field(description="every public path, from /openapi.json")


COLLECTIONS = (
    Link(name="artifacts", href="/api/artifacts/",
         description="artifacts of every run and outside producer; filters and a cursor"),
    Link(name="artifacts by execution", href="/api/artifacts/by-execution",
         description="the same artifacts grouped by execution"),
    Link(name="runs", href="/api/runs", description="runs with status, trigger and progress"),
    Link(name="workflows", href="/api/workflows",
         description="workflows with their schedules and next fire times; POST …/{workflow_id}/runs triggers one"),
)
DOCUMENTATION = (
    Link(name="docs", href="/docs", description="the HTTP API, every operation and schema"),
    Link(name="openapi", href="/openapi.json", description="the same as OpenAPI 3"),
    Link(name="asyncapi", href="/asyncapi", description="the event contract of the broker topics"),
    Link(name="asyncapi.json", href="/asyncapi.json", description="the same as AsyncAPI"),
    Link(name="health", href="/health", description="the whole system's health, one entry per component"),
    Link(name="ui", href="/runs", description="the web UI"),
)


def path_entries(document: dict) -> list[PathEntry]:
    entries = []
    for path, item in document.get("paths", {}).items():
        operations = [(m, op) for m, op in item.items() if m in HTTP_METHODS and isinstance(op, dict)]
        summaries = [op["summary"] for _, op in operations if op.get("summary")]
        entries.append(PathEntry(path=path, methods=[m.upper() for m, _ in operations],
                                 summary=summaries[0] if summaries else None))
    return entries


@router.get("/api", include_in_schema=False)
@router.get("/api/", response_model=ApiIndex, summary="Index of the API: collections, documentation, every path")
async def api_index(request: Request) -> ApiIndex:
    document = await request.app.state.openapi.document()
    return ApiIndex(
        name=request.app.title,
        version=request.app.version,
        collections=list(COLLECTIONS),
        documentation=list(DOCUMENTATION),
        paths=path_entries(document),
    )
