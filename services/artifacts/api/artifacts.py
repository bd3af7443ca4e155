"""`/api/artifacts`: lists, grouped by execution, one artifact, its content."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response, StreamingResponse

from services.artifacts.api import cursors, mapping, schemas
from services.artifacts.api.deps import RuntimeDep, SessionDep
from services.artifacts.db.models import Artifact
from services.artifacts.queries.artifacts import ArtifactFilters, get_artifact, list_artifacts, list_by_execution
from shared import bounded_json
from shared.http import error_responses
from shared.http_params import Instant, text_query
from shared.artifact_store import (
    BlobNotFoundError,
    ContentMismatchError,
    UnsafeUriError,
    UnsupportedStoreError,
)

router = APIRouter(prefix="/api/artifacts", tags=["artifacts"])

Identifier = Annotated[str | None, text_query(250)]


def artifact_filters(
    workflow_id: Identifier = None,
    execution_id: Identifier = None,
    step_name: Identifier = None,
    kind: Identifier = None,
    dag_id: Identifier = None,
    task_id: Identifier = None,
    created_after: Annotated[Instant | None, Query(description="inclusive")] = None,
    created_before: Annotated[Instant | None, Query(description="exclusive")] = None,
) -> ArtifactFilters:
    return ArtifactFilters(
        workflow_id=workflow_id,
        execution_id=execution_id,
        step_name=step_name,
        kind=kind,
        dag_id=dag_id,
        task_id=task_id,
        created_after=created_after,
        created_before=created_before,
    )


FiltersDep = Annotated[ArtifactFilters, Depends(artifact_filters)]
Limit = Annotated[int, Query(ge=1, le=500, description="page size, at most 500")]


@router.get("/", response_model=schemas.ArtifactPage)
@router.get("", response_model=schemas.ArtifactPage, include_in_schema=False)
async def list_artifacts_route(
    session: SessionDep, runtime: RuntimeDep, filters: FiltersDep, limit: Limit = 50,
    cursor: Annotated[str | None, cursors.ARTIFACTS.query()] = None,
) -> schemas.ArtifactPage:
    after = cursors.ARTIFACTS.decode(cursor) if cursor else None
    listings, total, more = await list_artifacts(
        session, filters, limit, after, total_cap=runtime.settings.artifacts_list_total_cap
    )
    next_cursor = None
    if more and listings:
        last = listings[-1].artifact
        next_cursor = cursors.ARTIFACTS.encode(last.created_at, last.artifact_id)
    return schemas.ArtifactPage(
        artifacts=[mapping.artifact_summary(item.artifact, item.has_inline_payload) for item in listings],
        total=total.count,
        total_is_exact=total.exact,
        limit=limit,
        next_cursor=next_cursor,
    )


@router.get("/by-execution", response_model=schemas.ExecutionArtifactsPage)
async def list_by_execution_route(
    session: SessionDep, filters: FiltersDep, limit: Limit = 50,
    cursor: Annotated[str | None, cursors.BY_EXECUTION.query()] = None,
) -> schemas.ExecutionArtifactsPage:
    after = cursors.BY_EXECUTION.decode(cursor) if cursor else None
    groups, total, more = await list_by_execution(session, filters, limit, after)
    next_cursor = None
    if more and groups:
        next_cursor = cursors.BY_EXECUTION.encode(groups[-1].last_created_at, groups[-1].execution_id)
    return schemas.ExecutionArtifactsPage(
        executions=[mapping.execution_group(group) for group in groups],
        total=total,
        limit=limit,
        next_cursor=next_cursor,
    )


async def _artifact_or_404(session: SessionDep, artifact_id: UUID) -> Artifact:
    artifact = await get_artifact(session, artifact_id)
    if artifact is None:
        raise HTTPException(status_code=404, detail=f"no artifact {artifact_id}")
    return artifact


NO_ARTIFACT = error_responses(404, e404="no such artifact")


@router.get("/{artifact_id}", response_model=schemas.Artifact, responses=NO_ARTIFACT)
async def get_artifact_route(artifact: Annotated[Artifact, Depends(_artifact_or_404)]) -> schemas.Artifact:
    return mapping.artifact_detail(artifact)


# Content is whatever a producer stored (HTML, SVG...): opened directly, it must not
# run script in this origin or be sniffed into something else (the gateway says the same).
UNTRUSTED_CONTENT_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}


@router.get(
    "/{artifact_id}/content",
    response_class=Response,
    responses={
        200: {"description": "the content, with the artifact's media type", "content": {"*/*": {}}},
        **error_responses(
            404, 409, 422,
            e404="no such artifact, or its stored content is gone",
            e409="stored content no longer matches its sha256",
            e422="an invalid artifact id, or the artifact's uri is outside this service's artifact store",
        ),
    },
)
async def get_content_route(artifact: Annotated[Artifact, Depends(_artifact_or_404)], runtime: RuntimeDep) -> Response:
    headers = UNTRUSTED_CONTENT_HEADERS | {
        "Content-Disposition": f'inline; filename="{_safe_filename(artifact.name)}"'
    }
    if artifact.uri is None:
        return Response(_inline_bytes(artifact), media_type=artifact.media_type, headers=headers)
    # The messages name the artifact, never the store's own paths.
    try:
        # Checked in full before the first byte goes out, so a mismatch is a clean 409.
        verified = await runtime.store.verify(artifact.uri, artifact.sha256, artifact.size_bytes)
        blob = await runtime.store.open(artifact.uri)
    except ContentMismatchError:
        raise HTTPException(
            status_code=409, detail=f"artifact {artifact.artifact_id}: its stored content no longer matches its sha256"
        ) from None
    except BlobNotFoundError:
        raise HTTPException(status_code=404, detail=f"artifact {artifact.artifact_id}: its stored content is gone") from None
    except (UnsafeUriError, UnsupportedStoreError):
        raise HTTPException(
            status_code=422,
            detail=f"artifact {artifact.artifact_id} has a uri outside the artifact store; this service will not read it",
        ) from None
    headers |= {"Content-Length": str(verified.size_bytes), "ETag": f'"{verified.sha256}"'}
    return StreamingResponse(_verified_chunks(blob, verified.sha256), media_type=artifact.media_type, headers=headers)


async def _verified_chunks(blob, sha256: str) -> AsyncIterator[bytes]:
    """The content as it is read, hashed again on the way out: if it changed between the
    check and the read, the stream is cut short rather than completed with wrong bytes."""
    digest = hashlib.sha256()
    async for chunk in blob:
        digest.update(chunk)
        yield chunk
    if digest.hexdigest() != sha256:
        raise ContentMismatchError(f"content at {blob.uri} changed while it was being sent")


def _inline_bytes(artifact: Artifact) -> bytes:
    """The inline payload as JSON text, under the rule every response keeps (see
    `mapping.stored_json`): a row stored before the event bounds is served, not refused."""
    is_json = artifact.media_type.split(";")[0].strip().lower().endswith(("/json", "+json"))
    if isinstance(artifact.payload, str) and not is_json:
        # A text payload (CSV, Markdown, SVG...) is sent as the text itself.
        return bounded_json.clean_text(artifact.payload).encode()
    return bounded_json.dumps(artifact.payload).encode()


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "artifact"
