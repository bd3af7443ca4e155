"""What happens to one message of `ibflow.runs.requested`.

Undecodable or invalid -> `ibflow.deadletter` with the reason, and the consumer goes
on. A valid request runs its workflow to an outcome (succeeded or failed: both are
published, neither raises). Only a broker that does not take the run's events makes
this raise, so the message stays uncommitted and is delivered again; the run's
deterministic event ids make that re-run harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, cast

from services.signals.workflow.emitter import Publish
from services.signals.workflow.runner import RunOutcome, RunResources, Workflow, reject_run, run_workflow
from shared import topics
from shared.events import DeadLetter, EventDecodeError, RunRequested, decode_event

log = logging.getLogger(__name__)

CONSUMER_NAME = "signals"


@dataclass(frozen=True)
class SourceRecord:
    """Where a message came from, for the dead letter."""

    topic: str
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None


class DeadLetterPublish(Protocol):
    async def __call__(self, letter: DeadLetter, key: bytes | None) -> None: ...


class RunRequestHandler:
    def __init__(
        self,
        *,
        workflows: Mapping[str, Workflow],
        resources: RunResources,
        publish: Publish,
        publish_dead_letter: DeadLetterPublish,
    ) -> None:
        self._workflows = workflows
        self._resources = resources
        self._publish = publish
        self._publish_dead_letter = publish_dead_letter

    async def handle(self, value: bytes | None, source: SourceRecord) -> RunOutcome | None:
        try:
            request = decode_event(value or b"", expected=(RunRequested,))
        except EventDecodeError as exc:
            await self._dead_letter(value, source, str(exc))
            return None
        request = cast(RunRequested, request)
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

    async def _dead_letter(self, value: bytes | None, source: SourceRecord, reason: str) -> None:
        letter = DeadLetter.of(
            consumer=CONSUMER_NAME,
            topic=source.topic,
            value=value,
            reason=reason,
            partition=source.partition,
            offset=source.offset,
            key=source.key,
        )
        await self._publish_dead_letter(letter, source.key)
        log.warning(
            "run request dead-lettered",
            extra={"reason": reason, "partition": source.partition, "offset": source.offset,
                   "dead_letter_id": str(letter.dead_letter_id), "topic": topics.DEADLETTER},
        )
