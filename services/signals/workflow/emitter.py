"""Everything a run sends to the broker goes through one `RunEmitter`.

Deterministic event ids: each event's `event_id` is uuid5 of (execution_id, a stable
name of the event), e.g. `run.started`, `step.started:fetch_market_data:1`,
`artifact:compute_features:features`, `signal:AAPL`, `log:7:<hash of level+message>`.
When a `RunRequested` is delivered again (the service died before committing it, a
rebalance moved the partition) the workflow runs again and re-emits the same ids, so
the artifacts service, which stores exactly once by `event_id`, keeps one copy. A
re-run that diverges (a symbol that failed the first time) still differs where it
differs: its log lines hash their text, and a step that failed once and succeeded
later has both a `step.failed` and a `step.succeeded` event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shared import topics, tracing
from shared.event_bounds import storable_text
from shared.events import Event, LogLevel, LogRecorded

EVENT_ID_NAMESPACE = uuid.UUID("6f1c7d8e-3b0a-5d54-9a57-1b7e0c2f4a91")

# Returns once the event is handed over; what it returns, when awaitable, settles with
# the broker's acknowledgement (a publisher that waits for it itself returns None).
Publish = Callable[[Event], Awaitable[Awaitable[Any] | None]]
E = TypeVar("E", bound=Event)

process_log = logging.getLogger("services.signals.run")


class PublishError(RuntimeError):
    """The broker did not take an event. Not an outcome of the step: the run request is
    left uncommitted so that it is delivered again."""


def event_id_for(execution_id: str, name: str) -> uuid.UUID:
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{execution_id}/{name}")


def jsonable(value: Any) -> Any:
    """Plain JSON types only: numpy scalars and dates become numbers and strings, and
    NaN / infinity become null (they are not JSON, and stored JSON must parse anywhere)."""
    return json.loads(json.dumps(value, default=_json_default), parse_constant=lambda _: None)


def _json_default(value: Any) -> Any:
    for attr in ("item", "isoformat"):
        method = getattr(value, attr, None)
        if callable(method):
            return method()
    return str(value)


def traceback_summary(exc: BaseException, limit: int = 8) -> list[str]:
    frames = traceback.extract_tb(exc.__traceback__)[-limit:]
    return [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in frames]


class RunEmitter:
    """A run's events, in order. Logs, artifacts and signals go out without waiting for
    the broker one by one (a round trip each, most of a run's plumbing); a run or step
    lifecycle event waits until every event before it is acknowledged, and for its own
    acknowledgement: a step is reported done only once all it produced is stored, and a
    broker that refused any of it raises `PublishError` there."""

    def __init__(self, publish: Publish, *, workflow_id: str, execution_id: str) -> None:
        self._publish = publish
        self.workflow_id = workflow_id
        self.execution_id = execution_id
        self._log_seq = 0
        self._unacknowledged: list[tuple[Event, Awaitable[Any]]] = []

    def event_id(self, name: str) -> uuid.UUID:
        return event_id_for(self.execution_id, name)

    async def emit(self, event_type: type[E], name: str, /, **fields: Any) -> E:
        """Build the event (a validation error is the caller's bug and raises as such)
        and publish it (a broker error raises `PublishError`)."""
        event = event_type(
            event_id=self.event_id(name),
            workflow_id=self.workflow_id,
            execution_id=self.execution_id,
            **fields,
        )
        lifecycle = event.topic == topics.RUNS_EVENTS
        if lifecycle:
            await self.settle()
        try:
            acknowledgement = await self._publish(event)
        except Exception as exc:
            raise PublishError(f"could not publish {event.event_type} to {event.topic}: {exc!r}") from exc
        if acknowledgement is not None:
            self._unacknowledged.append((event, acknowledgement))
            if lifecycle:
                await self.settle()
        return event

    async def settle(self) -> None:
        """Waits for the broker to acknowledge every event emitted so far."""
        pending, self._unacknowledged = self._unacknowledged, []
        for event, acknowledgement in pending:
            try:
                await acknowledgement
            except Exception as exc:
                raise PublishError(f"could not publish {event.event_type} to {event.topic}: {exc!r}") from exc

    async def log(
        self,
        level: LogLevel,
        message: str,
        *,
        step_name: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> LogRecorded:
        """One log line of the run: a `LogRecorded` event and the process's JSON log line.
        Its fields carry the `trace_id` and `span_id` of the span (run or step) it was
        written in."""
        fields = {**tracing.current_ids(), **jsonable(fields or {})}
        logger_name = f"signals.{step_name or 'run'}"
        process_log.log(
            logging.getLevelName(level),
            message,
            extra={
                "workflow_id": self.workflow_id,
                "execution_id": self.execution_id,
                "step_name": step_name,
                "run_logger": logger_name,
                "fields": fields,
            },
        )
        self._log_seq += 1
        text_hash = hashlib.sha256(f"{level}\n{message}".encode()).hexdigest()[:16]
        return await self.emit(
            LogRecorded,
            f"log:{self._log_seq}:{text_hash}",
            step_name=step_name,
            level=level,
            message=storable_text(message[:10_000]),
            logger=logger_name,
            fields=fields,
        )


class StepLog:
    """The logger a step writes to: every line is a `LogRecorded` of its step."""

    def __init__(self, emitter: RunEmitter, step_name: str | None) -> None:
        self._emitter = emitter
        self._step_name = step_name

    async def debug(self, message: str, **fields: Any) -> None:
        await self._emitter.log("DEBUG", message, step_name=self._step_name, fields=fields)

    async def info(self, message: str, **fields: Any) -> None:
        await self._emitter.log("INFO", message, step_name=self._step_name, fields=fields)

    async def warning(self, message: str, **fields: Any) -> None:
        await self._emitter.log("WARNING", message, step_name=self._step_name, fields=fields)

    async def error(self, message: str, **fields: Any) -> None:
        await self._emitter.log("ERROR", message, step_name=self._step_name, fields=fields)
