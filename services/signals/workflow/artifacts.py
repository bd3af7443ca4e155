"""Publishing artifacts: small JSON inline in the event, everything else in the store.

Table-shaped artifacts are JSON `{"columns": [{"name", "description"}], "rows": [[...]]}`
with `metadata.renderer = "table"` so the UI draws a table; their rows are bounded so
the event stays small, and the full table goes to the store as CSV next to it.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

import pandas as pd

from services.signals.workflow.emitter import RunEmitter, jsonable
from shared.artifact_store import ArtifactStore
from shared.events import ArtifactCreated

JSON = "application/json"
CSV = "text/csv"
SVG = "image/svg+xml"
MARKDOWN = "text/markdown"
OCTET_STREAM = "application/octet-stream"


def table_payload(frame: pd.DataFrame, descriptions: Mapping[str, str]) -> dict[str, Any]:
    """The table JSON of `frame` (its columns in order; NaN becomes null)."""
    columns = [{"name": str(c), "description": descriptions.get(str(c), "")} for c in frame.columns]
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    return {"columns": columns, "rows": rows}


def column_orders(value: Any) -> dict[str, list[str]]:
    """The column order of each list of flat rows in an inline JSON value ("" for the
    value itself): it is stored as JSONB, which keeps no key order, so the UI reads the
    order from `metadata.columns`. A table payload (`columns` + `rows`) names its own."""
    if isinstance(value, dict) and isinstance(value.get("columns"), list):
        return {}
    tables = {"": value} if isinstance(value, list) else value if isinstance(value, dict) else {}
    return {
        key: list(dict.fromkeys(column for row in rows for column in row))
        for key, rows in tables.items()
        if isinstance(rows, list) and rows and all(isinstance(row, dict) for row in rows)
    }


def _cell(value: Any) -> Any:
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat() if value == value.normalize() else value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class StepArtifacts:
    """The artifacts of one step of one run; names are unique within the step."""

    def __init__(
        self, emitter: RunEmitter, store: ArtifactStore, *, step_name: str, inline_max_bytes: int
    ) -> None:
        self._emitter = emitter
        self._store = store
        self._step_name = step_name
        self._inline_max_bytes = inline_max_bytes
        self.published: list[ArtifactCreated] = []

    async def json(
        self, name: str, kind: str, value: Any, *, metadata: Mapping[str, Any] | None = None,
        inline_max_bytes: int | None = None,
    ) -> ArtifactCreated:
        """Inline when the JSON is small (at most `inline_max_bytes`, by default the
        service's setting), otherwise the same JSON in the store."""
        value = jsonable(value)
        encoded = json.dumps(value, separators=(",", ":")).encode()
        if len(encoded) <= (inline_max_bytes or self._inline_max_bytes):
            if orders := column_orders(value):
                metadata = {"columns": orders, **(metadata or {})}
            return await self._publish(name, kind, JSON, metadata, payload=value)
        return await self.content(name, kind, encoded, JSON, metadata=metadata)

    async def table(
        self,
        name: str,
        kind: str,
        frame: pd.DataFrame,
        *,
        descriptions: Mapping[str, str],
        metadata: Mapping[str, Any] | None = None,
    ) -> ArtifactCreated:
        payload = table_payload(frame, descriptions)
        return await self.json(name, kind, payload, metadata={"renderer": "table", **(metadata or {})})

    async def content(
        self,
        name: str,
        kind: str,
        data: bytes,
        media_type: str,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> ArtifactCreated:
        """Bytes in the content-addressed store; the event carries uri, size and sha256."""
        blob = await self._store.put(data)
        return await self._publish(
            name, kind, media_type, metadata, uri=blob.uri, size_bytes=blob.size_bytes, sha256=blob.sha256
        )

    async def _publish(
        self, name: str, kind: str, media_type: str, metadata: Mapping[str, Any] | None, **content: Any
    ) -> ArtifactCreated:
        if any(a.name == name for a in self.published):
            # The name is part of the event id: a second artifact of that name would be
            # taken for a redelivery of the first and dropped by the store.
            raise ValueError(f"step {self._step_name} already published an artifact named {name!r}")
        key = f"artifact:{self._step_name}:{name}"
        event = await self._emitter.emit(
            ArtifactCreated,
            key,
            step_name=self._step_name,
            artifact_id=self._artifact_id(key),
            name=name,
            kind=kind,
            media_type=media_type,
            metadata=jsonable(dict(metadata or {})),
            **content,
        )
        self.published.append(event)
        return event

    def _artifact_id(self, key: str) -> uuid.UUID:
        # Same rule as event ids: a re-run of the same execution names the same artifact.
        return self._emitter.event_id(f"{key}#artifact_id")
