"""The workflows ibflow knows how to run (their steps run in the signals service)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_WORKFLOW_ID = "ibkr_trading_signal_workflow"


@dataclass(frozen=True)
class WorkflowDefinition:
    workflow_id: str
    description: str
    steps: tuple[str, ...]


CATALOGUE: dict[str, WorkflowDefinition] = {
    definition.workflow_id: definition
    for definition in (
        WorkflowDefinition(
            workflow_id=DEFAULT_WORKFLOW_ID,
            description=(
                "Fetches daily bars for the watchlist from Interactive Brokers, computes "
                "technical features, scores BUY/SELL/HOLD signals and publishes them."
            ),
            steps=("fetch_market_data", "compute_features", "generate_signals", "publish_signals"),
        ),
    )
}
