"""Response bodies one service serves and another reads, declared once.

The producing service validates with these before it sends (or uses them as its
`response_model`); the reader parses with them instead of picking at dicts, so a
changed field fails loudly at the boundary rather than as a None deep inside.
Readers ignore fields they do not use, so a producer may add fields freely.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

SIGNALS_DIFF_KIND = "signals_diff"
"""The artifact kind of a run's "what changed since the previous run" (published by signals)."""


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class ActionChange(_Read):
    symbol: str
    from_action: str | None = Field(alias="from")
    to_action: str | None = Field(alias="to")


class StrengthMove(_Read):
    symbol: str
    from_strength: float = Field(alias="from")
    to_strength: float = Field(alias="to")
    delta: float


class SignalsDiff(_Read):
    """A run's signals against the previous successful run's, as its report shows them."""

    previous_available: bool
    previous_execution_id: str | None = Field(description="the run compared with")
    changed: list[ActionChange] = Field(description="in both runs, with a different action")
    strength_moves: list[StrengthMove] = Field(
        description="in both runs, strength moved by at least the signals service's threshold; biggest first")
    new: list[str] = Field(description="symbols only this run has")
    dropped: list[str] = Field(description="symbols only the previous run has")
    unchanged: list[str] = Field(description="in both runs with the same action")


class RunRef(_Read):
    execution_id: str


class RunRefPage(_Read):
    """What a reader needs of `GET /api/runs`."""

    runs: list[RunRef]


class ArtifactRef(_Read):
    artifact_id: UUID


class ArtifactRefPage(_Read):
    """What a reader needs of `GET /api/artifacts/`."""

    artifacts: list[ArtifactRef]


class ArtifactPayload(_Read):
    """What a reader needs of `GET /api/artifacts/{id}`: the inline payload, None when the
    content lives in a blob (then `/content` has it)."""

    artifact_id: UUID
    payload: Any = None
