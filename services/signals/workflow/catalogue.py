"""The workflows this service runs, by workflow id: the trading-signal workflow and the
scorecard of its signals."""

from __future__ import annotations

from services.signals.workflow.runner import Workflow
from services.signals.workflow.scorecard import scorecard_workflow
from services.signals.workflow.trading_signal import WORKFLOW

WORKFLOWS: dict[str, Workflow] = {
    workflow.workflow_id: workflow for workflow in (WORKFLOW, scorecard_workflow(WORKFLOW.workflow_id))
}
