"""The previous successful run's signals, read from the artifacts service's HTTP API.

Services do not import each other; an HTTP read of the public API is the allowed way
to learn what an earlier run published. Used only for the report's "changes since
the previous run" section, so any trouble here degrades the report, never the run.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from services.signals.workflow.runner import PreviousSignals
from shared.api_models import ArtifactPayload, ArtifactRefPage, RunRefPage

M = TypeVar("M", bound=BaseModel)


class PreviousSignalsUnavailable(Exception):
    """The artifacts service could not tell; the message says why, for the run's log."""


class ArtifactsApiPreviousSignals:
    def __init__(self, base_url: str, *, timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._transport = transport

    async def __call__(self, *, workflow_id: str, execution_id: str) -> PreviousSignals | None:
        try:
            async with httpx.AsyncClient(
                base_url=self._base_url, timeout=self._timeout, transport=self._transport
            ) as client:
                return await self._lookup(client, workflow_id, execution_id)
        except httpx.HTTPStatusError as exc:
            raise PreviousSignalsUnavailable(
                f"{exc.request.method} {exc.request.url.path} answered {exc.response.status_code}"
            ) from None
        except httpx.HTTPError as exc:
            raise PreviousSignalsUnavailable(
                f"artifacts service at {self._base_url} unreachable: {type(exc).__name__}"
            ) from None
        except ValidationError as exc:
            raise PreviousSignalsUnavailable(f"unexpected answer from the artifacts service: {exc}") from None
        except ValueError as exc:
            raise PreviousSignalsUnavailable(f"unexpected answer from the artifacts service: {exc}") from None

    async def _lookup(self, client: httpx.AsyncClient, workflow_id: str, execution_id: str) -> PreviousSignals | None:
        runs = await _get(
            client, RunRefPage, "/api/runs", params={"workflow_id": workflow_id, "status": "succeeded", "limit": 5}
        )
        # A redelivered request may re-run an execution that already succeeded.
        previous = next((r.execution_id for r in runs.runs if r.execution_id != execution_id), None)
        if previous is None:
            return None
        listing = await _get(
            client, ArtifactRefPage, "/api/artifacts/", params={"execution_id": previous, "kind": "signals", "limit": 1}
        )
        if not listing.artifacts:
            return None
        artifact = await _get(client, ArtifactPayload, f"/api/artifacts/{listing.artifacts[0].artifact_id}")
        payload = artifact.payload
        if payload is None:
            payload = await _get_json(client, f"/api/artifacts/{artifact.artifact_id}/content")
        if not isinstance(payload, dict):
            raise ValueError(f"signals artifact of {previous} is not a JSON object")
        return PreviousSignals(execution_id=previous, payload=payload)


async def _get(
    client: httpx.AsyncClient, model: type[M], path: str, params: dict[str, Any] | None = None
) -> M:
    return model.model_validate(await _get_json(client, path, params))


async def _get_json(client: httpx.AsyncClient, path: str, params: dict[str, Any] | None = None) -> Any:
    response = await client.get(path, params=params)
    response.raise_for_status()
    return response.json()
