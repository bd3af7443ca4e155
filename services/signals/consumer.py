"""What happens to one message of `ibflow.runs.requested`, under the shared consumer rule.

Undecodable, invalid or out-of-bounds -> `ibflow.deadletter` with the reason, and the
consumer goes on. A valid request runs its workflow to an outcome (succeeded, failed:
both are published, neither raises). Only a broker that does not take the run's events
makes it raise; the rule then waits and runs it again, and the run's deterministic
event ids make that re-run harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from services.signals.workflow.emitter import Publish
from services.signals.workflow.runner import RunOutcome, RunResources, Workflow, reject_run, run_workflow
from opentelemetry.trace import SpanKind

from shared import topics, tracing
from shared.consuming import ConsumerRule, PublishDeadLetter, Record
from shared.event_bounds import DEFAULT_MAX_FUTURE_SKEW
from shared.events import Event, RunRequested

log = logging.getLogger(__name__)

CONSUMER_NAME = "signals"


@dataclass(frozen=True)
class SourceRecord:
    """A record as the handler sees it (a Kafka record, or one a test builds)."""

    topic: str
    value: bytes | None
    partition: int = 0
    offset: int = -1
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


class RunRequestHandler:
    def __init__(
        self,
        *,
        workflows: Mapping[str, Workflow],
        resources: RunResources,
        publish: Publish,
        publish_dead_letter: PublishDeadLetter,
        max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
        max_attempts: int = 3,
    ) -> None:
        self._workflows = workflows
        self._resources = resources
        self._publish = publish
        self.rule = ConsumerRule(
            consumer=CONSUMER_NAME,
            expected={topics.RUNS_REQUESTED: (RunRequested,)},
            publish_dead_letter=publish_dead_letter,
            max_future_skew=max_future_skew,
            max_attempts=max_attempts,
        )

    async def handle(self, record: Record) -> RunOutcome | None:
        """The run's outcome, or None when the request was dead-lettered.

        The run is a span in the trace the request's `traceparent` header names (the
        trigger's), so every event it emits and every log line it writes carry it on.
        """
        outcomes: list[RunOutcome] = []

        async def run(event: Event) -> None:
            outcomes.append(await self.run(cast(RunRequested, event)))

        parent = tracing.context_from_headers(getattr(record, "headers", None))
        with tracing.span(f"{record.topic} process", parent=parent, kind=SpanKind.CONSUMER,
                          attributes={"messaging.destination.name": record.topic,
                                      "ibflow.execution_id": (record.key or b"").decode("utf-8", "replace")}):
            await self.rule.handle(record, run)
        return outcomes[-1] if outcomes else None

    async def run(self, request: RunRequested) -> RunOutcome:
        workflow = self._workflows.get(request.workflow_id)
        log.info(
            "run requested",
            extra={"workflow_id": request.workflow_id, "execution_id": request.execution_id, "trigger": request.trigger},
        )
        if workflow is None:
            known = ", ".join(sorted(self._workflows))
            outcome = await reject_run(
                request, self._publish, f"the signals service does not run workflow {request.workflow_id!r} (it runs {known})"
            )
        else:
            outcome = await run_workflow(workflow, request, self._resources, self._publish)
        log.info(
            f"run {outcome.status}",
            extra={
                "workflow_id": request.workflow_id,
                "execution_id": request.execution_id,
                "status": outcome.status,
                "error": outcome.error,
            },
        )
        return outcome
