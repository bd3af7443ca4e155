"""The scorecard contract: how a workflow's published signals turned out.

A scorecard is an artifact of kind `scorecard` with an inline JSON payload of the shape
below, published by the workflow's scorecard workflow (`<workflow>.scorecard`, run by
the signals service). The gateway answers `GET /api/workflows/{workflow}/scorecard`
with the latest one. Forward returns are `close(as_of + h sessions) / close(as_of) - 1`,
`null` until that session's bar exists.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCORECARD_KIND = "scorecard"
HORIZONS = (1, 5, 20)
_SUFFIX = ".scorecard"

Action = Literal["BUY", "SELL", "HOLD"]


def scorecard_workflow_id(workflow_id: str) -> str:
    """The workflow that scores `workflow_id`'s signals."""
    return workflow_id + _SUFFIX


def scored_workflow_id(scorecard_workflow: str) -> str | None:
    """The workflow a scorecard workflow scores; None when it is not one."""
    scored = scorecard_workflow.removesuffix(_SUFFIX)
    return scored if scored != scorecard_workflow and scored else None


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScoredSignal(_Strict):
    execution_id: str
    symbol: str
    as_of: str = Field(description="date of the signal's last bar, YYYY-MM-DD")
    action: Action
    strength: float | None = None
    price: float | None = Field(description="the close the signal was given at")
    forward_returns: dict[str, float | None] = Field(
        description='per horizon ("1", "5", "20" sessions): close(as_of + h) / close(as_of) - 1; null: not yet known'
    )
    hits: dict[str, bool | None] = Field(
        description="BUY followed by a positive return, SELL by a negative one; null for HOLD or an unknown return"
    )


class SummaryRow(_Strict):
    symbol: str
    action: Action
    horizon: int
    count: int = Field(description="signals whose return at this horizon is known")
    pending: int = Field(description="signals whose return at this horizon is not known yet")
    hit_rate: float | None = Field(description="hits / count; null for HOLD (not scored) and when count is 0")
    mean_return: float | None
    mean_signed_return: float | None = Field(description="BUY: the return, SELL: minus it; null for HOLD")


class CurvePoint(_Strict):
    date: str
    signals: float = Field(description="cumulative return of following the signals (BUY long, SELL short, HOLD flat)")
    buy_and_hold: float


class Curve(_Strict):
    symbol: str = Field(description="a symbol, or ALL: the symbols equally weighted")
    points: list[CurvePoint]


class Labels(_Strict):
    data: str = Field(description="which prices the returns come from")
    replayed: bool
    delayed: bool
    costs: str
    not_yet_scorable: int = Field(description="signals with at least one horizon whose return is not known yet")


class Scorecard(_Strict):
    workflow_id: str
    horizons: list[int]
    signals: list[ScoredSignal]
    summary: list[SummaryRow]
    curves: list[Curve]
    labels: Labels
    first_as_of: str | None
    last_as_of: str | None
    prices_until: str | None = Field(description="date of the latest bar the returns could use")
    duplicates_ignored: int = Field(
        description="signals of a symbol and date already scored from a later run of the same date"
    )
