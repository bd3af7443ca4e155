"""Event contracts: the envelope and every event type, as frozen pydantic models.

Producers are strict: building an event with an unknown field, or with a value outside
the bounds of `shared.event_bounds`, raises. Consumers are tolerant of what is merely
new: `decode_event` drops fields it does not know before validating, so a newer
producer (an additive `schema_version` change) never breaks an older consumer; it
rejects, with a reason, everything else.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, Self
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import SchemaValidator

from shared import topics
from shared.event_bounds import DEFAULT_MAX_FUTURE_SKEW, MAX_EVENT_BYTES, check_event_fields, text_keeps_bounds

WORKFLOW_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
MAX_INLINE_PAYLOAD_BYTES = 256 * 1024
# Validation context set by `decode_event` when the JSON text alone proved the bounds.
_BOUNDS_KEPT_BY_TEXT = "bounds_kept_by_text"


def utc_now() -> datetime:
    return datetime.now(UTC)


class EventDecodeError(ValueError):
    """Raised for bytes that are not a valid ibflow event; the message is the reason."""


class Event(BaseModel):
    """The envelope every event carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: ClassVar[str]

    event_id: UUID = Field(default_factory=uuid4)
    event_type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utc_now)
    workflow_id: str = Field(pattern=WORKFLOW_ID_PATTERN)
    execution_id: str = Field(min_length=1, max_length=200)
    step_name: str | None = Field(default=None, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _within_bounds(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and not (info.context or {}).get(_BOUNDS_KEPT_BY_TEXT):
            check_event_fields(data)
        return data

    @field_validator("occurred_at")
    @classmethod
    def _utc_and_not_ahead(cls, value: datetime, info: ValidationInfo) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must carry a timezone (RFC 3339)")
        value = value.astimezone(UTC)
        skew = (info.context or {}).get("max_future_skew", DEFAULT_MAX_FUTURE_SKEW)
        if value > utc_now() + skew:
            raise ValueError(f"occurred_at is more than {skew} ahead of this clock")
        return value

    @property
    def key(self) -> bytes:
        """Kafka key: one execution's events stay in order on one partition."""
        return self.execution_id.encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


# --- ibflow.runs.requested ---------------------------------------------------------


class RunParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    symbols: list[Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9.]{0,11}$")]] | None = Field(
        default=None, min_length=1, max_length=100
    )
    # Left out of the event when unset, so a run without it is requested with the same bytes as before.
    as_of: date | None = Field(
        default=None, exclude_if=lambda value: value is None,
        description="run as of this date's close: market data ends at it, nothing later is used",
    )


class RunRequested(Event):
    topic: ClassVar[str] = topics.RUNS_REQUESTED
    event_type: Literal["run.requested"] = "run.requested"
    trigger: Literal["schedule", "manual", "backfill"]
    params: RunParams = RunParams()
    scheduled_for: datetime | None = None
    requested_by: str | None = None


# --- ibflow.runs.events -------------------------------------------------------------


class RunStarted(Event):
    topic: ClassVar[str] = topics.RUNS_EVENTS
    event_type: Literal["run.started"] = "run.started"
    trigger: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    steps: list[str] = Field(default_factory=list)


class RunSucceeded(Event):
    topic: ClassVar[str] = topics.RUNS_EVENTS
    event_type: Literal["run.succeeded"] = "run.succeeded"
    summary: dict[str, Any] = Field(default_factory=dict)


class FailedItem(BaseModel):
    """One item of a run (for the trading workflow: a symbol) that a step could not
    process, and why in words; `code` is the data source's own error code (IBKR's 200...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item: str = Field(min_length=1, max_length=200)
    step: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    code: int | None = None


MAX_FAILED_ITEMS = 1000


class RunPartiallySucceeded(Event):
    """The workflow ran to its end but some items failed: a run is `succeeded` only when
    none did. A distinct event, not a field of `run.succeeded`, so that a consumer that
    does not know it yet dead-letters it instead of reporting a success."""

    topic: ClassVar[str] = topics.RUNS_EVENTS
    event_type: Literal["run.partial"] = "run.partial"
    summary: dict[str, Any] = Field(default_factory=dict)
    failed_items: list[FailedItem] = Field(min_length=1, max_length=MAX_FAILED_ITEMS)


class RunFailed(Event):
    topic: ClassVar[str] = topics.RUNS_EVENTS
    event_type: Literal["run.failed"] = "run.failed"
    error: str
    # Items that had already failed before the run as a whole did.
    failed_items: list[FailedItem] = Field(default_factory=list, max_length=MAX_FAILED_ITEMS)


class StepStarted(Event):
    topic: ClassVar[str] = topics.RUNS_EVENTS
    event_type: Literal["step.started"] = "step.started"
    attempt: int = Field(default=1, ge=1)


class StepSucceeded(Event):
    topic: ClassVar[str] = topics.RUNS_EVENTS
    event_type: Literal["step.succeeded"] = "step.succeeded"
    attempt: int = Field(default=1, ge=1)


class StepFailed(Event):
    topic: ClassVar[str] = topics.RUNS_EVENTS
    event_type: Literal["step.failed"] = "step.failed"
    attempt: int = Field(default=1, ge=1)
    error: str


class StepSkipped(Event):
    """A step that did not run because an earlier one failed; `reason` says which."""

    topic: ClassVar[str] = topics.RUNS_EVENTS
    event_type: Literal["step.skipped"] = "step.skipped"
    reason: str = Field(min_length=1, max_length=2000)


# --- ibflow.artifacts ---------------------------------------------------------------


class ArtifactCreated(Event):
    """An artifact: inline `payload`, or `uri` + `size_bytes` + `sha256` in the store.

    Producers outside ibflow (an Airflow DAG, a notebook) may publish these too; they
    set `dag_id` / `task_id` so the artifact can be found by them.
    """

    topic: ClassVar[str] = topics.ARTIFACTS
    event_type: Literal["artifact.created"] = "artifact.created"
    artifact_id: UUID = Field(default_factory=uuid4)
    name: str = Field(min_length=1, max_length=300)
    kind: str = Field(min_length=1, max_length=50)
    media_type: str = Field(default="application/json", min_length=3, max_length=200)
    payload: Any = None
    uri: str | None = Field(default=None, max_length=2000)
    size_bytes: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    metadata: dict[str, Any] = Field(default_factory=dict)
    dag_id: str | None = Field(default=None, max_length=250)
    task_id: str | None = Field(default=None, max_length=250)

    @model_validator(mode="after")
    def _payload_or_stored_content(self, info: ValidationInfo) -> Self:
        stored = self.uri is not None
        if stored and self.payload is not None:
            raise ValueError("an artifact has either an inline payload or a uri, not both")
        if stored and (self.size_bytes is None or self.sha256 is None):
            raise ValueError("an artifact with a uri needs size_bytes and sha256")
        if not stored and self.payload is None:
            raise ValueError("an artifact needs an inline payload or a uri")
        # Decoded from a text that kept the bounds (at most 16 KiB), the payload cannot
        # dump to more: no JSON value dumps to more than 4.5 times its text.
        if (not stored and not (info.context or {}).get(_BOUNDS_KEPT_BY_TEXT)
                and len(json.dumps(self.payload, default=str)) > MAX_INLINE_PAYLOAD_BYTES):
            raise ValueError(
                f"inline payload is larger than {MAX_INLINE_PAYLOAD_BYTES} bytes; "
                "store the content and send its uri"
            )
        return self


# --- ibflow.logs --------------------------------------------------------------------

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LogRecorded(Event):
    """One structured log line of a run: `fields` stays an object, never a string."""

    topic: ClassVar[str] = topics.LOGS
    event_type: Literal["log.record"] = "log.record"
    level: LogLevel = "INFO"
    message: str = Field(max_length=10_000)
    logger: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)


# --- ibflow.signals -----------------------------------------------------------------


class SignalGenerated(Event):
    """One trading signal for one symbol, for downstream consumers."""

    topic: ClassVar[str] = topics.SIGNALS
    event_type: Literal["signal.generated"] = "signal.generated"
    symbol: str
    action: Literal["BUY", "SELL", "HOLD"]
    strength: float = Field(ge=0.0, le=1.0)
    price: float | None = None
    as_of: str | None = Field(default=None, description="date of the last bar the signal uses")
    reasons: list[str] = Field(default_factory=list)
    model: str | None = None
    data_source: str | None = None
    delayed: bool = False


# --- decoding -----------------------------------------------------------------------

EXECUTION_EVENTS: tuple[type[Event], ...] = (
    RunRequested,
    RunStarted,
    RunSucceeded,
    RunPartiallySucceeded,
    RunFailed,
    StepStarted,
    StepSucceeded,
    StepFailed,
    StepSkipped,
    ArtifactCreated,
    LogRecorded,
    SignalGenerated,
)
EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["event_type"].default: cls for cls in EXECUTION_EVENTS
}
_FIELD_NAMES: dict[type[Event], frozenset[str]] = {cls: frozenset(cls.model_fields) for cls in EXECUTION_EVENTS}
RUN_LIFECYCLE_EVENTS = tuple(cls for cls in EXECUTION_EVENTS if cls.topic == topics.RUNS_EVENTS)


def events_of(topic: str) -> tuple[type[Event], ...]:
    """The event types that belong on `topic`: what its consumers accept."""
    return tuple(cls for cls in EXECUTION_EVENTS if cls.topic == topic)


def decode_event(
    raw: bytes | str,
    *,
    expected: tuple[type[Event], ...] = EXECUTION_EVENTS,
    max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
) -> Event:
    """Decode and validate one event value; unknown fields are ignored.

    Whatever the bytes, this returns an event or raises `EventDecodeError` with a
    human-readable reason: consumers turn that into a dead letter and go on.
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise EventDecodeError(f"event is larger than {MAX_EVENT_BYTES} bytes")
    if isinstance(raw, bytes) and (event := _decode_straight(raw, expected, max_future_skew)) is not None:
        return event
    try:
        data = _read_json(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventDecodeError(f"not valid UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise EventDecodeError("JSON nested too deeply to read") from None
    except ValueError as exc:  # an integer of more digits than Python converts, NaN
        raise EventDecodeError(f"not acceptable JSON: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        raise EventDecodeError(f"event must be a JSON object, got {type(data).__name__}")
    event_type = data.get("event_type")
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise EventDecodeError(f"unknown event_type {_short_repr(event_type)}")
    if cls not in expected:
        allowed = ", ".join(sorted(c.model_fields["event_type"].default for c in expected))
        raise EventDecodeError(f"event_type {event_type!r} does not belong here (expected {allowed})")
    fields = _FIELD_NAMES[cls]
    known = data if fields.issuperset(data) else {key: value for key, value in data.items() if key in fields}
    context = {"max_future_skew": max_future_skew}
    if isinstance(raw, bytes) and text_keeps_bounds(raw, data):
        context[_BOUNDS_KEPT_BY_TEXT] = True
    try:
        return cls.model_validate(known, context=context)
    except ValueError as exc:
        raise EventDecodeError(_validation_reason(exc)) from None
    except RecursionError:
        raise EventDecodeError("value nested too deeply to validate") from None


def _without_bounds_walk(schema: dict) -> dict | None:
    """An event's core schema without its `_within_bounds` step; None if it is not
    the shape this expects (a model, maybe wrapped in after-validators, around it)."""
    function = schema.get("function")
    if schema.get("type") == "function-before" and getattr(function.get("function"), "__name__", None) == (
        "_within_bounds"
    ):
        return schema["schema"]
    inner = schema.get("schema")
    if schema.get("type") not in ("model", "function-after") or not isinstance(inner, dict):
        return None
    stripped = _without_bounds_walk(inner)
    return None if stripped is None else {**schema, "schema": stripped}


def _straight_decoder() -> SchemaValidator | None:
    """Every event type as one union on `event_type`, without the bounds walk, for
    pydantic-core to validate straight from JSON text (the walk needs Python values)."""
    try:
        choices = {}
        for cls in EXECUTION_EVENTS:
            stripped = _without_bounds_walk(cls.__pydantic_core_schema__)
            if stripped is None:
                return None
            choices[cls.model_fields["event_type"].default] = stripped
        # pydantic-core takes a finished model's own validator, bounds walk and all, for
        # any schema of that model: build these as if the models were not finished yet.
        finished = {cls: cls.__dict__["__pydantic_complete__"] for cls in EXECUTION_EVENTS}
        try:
            for cls in finished:
                type.__setattr__(cls, "__pydantic_complete__", False)
            return SchemaValidator({"type": "tagged-union", "choices": choices, "discriminator": "event_type"})
        finally:
            for cls, complete in finished.items():
                type.__setattr__(cls, "__pydantic_complete__", complete)
    except Exception:  # another pydantic's schemas: every event goes the careful way
        return None


def _decode_straight(raw: bytes, expected: tuple[type[Event], ...], max_future_skew: timedelta) -> Event | None:
    """The event in `raw`, validated by pydantic-core straight from the text, when the
    text alone proves the bounds: at about half the cost of json.loads and validating
    its values. None means only "decode it the careful way", which also says why an
    event cannot be taken. The two read the same JSON alike, but for NaN and Infinity,
    which json.loads refuses; an unknown field fails here and is dropped there."""
    if _STRAIGHT is None or b"NaN" in raw or b"Infinity" in raw or not text_keeps_bounds(raw, None):
        return None
    try:
        event = _STRAIGHT.validate_json(raw, context={"max_future_skew": max_future_skew, _BOUNDS_KEPT_BY_TEXT: True})
    except Exception:
        return None
    return event if type(event) in expected else None


_STRAIGHT = _straight_decoder()


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


_JSON = json.JSONDecoder(parse_constant=_refuse_constant)


def _read_json(raw: bytes | str) -> Any:
    """`json.loads(raw, parse_constant=_refuse_constant)`, without the decoder it would
    build on every call."""
    if isinstance(raw, bytes):
        return _JSON.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    return json.loads(raw, parse_constant=_refuse_constant)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def _validation_reason(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    parts = []
    for err in errors():
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "invalid event: " + "; ".join(parts)


# --- ibflow.deadletter --------------------------------------------------------------

DEAD_LETTER_MAX_ORIGINAL_BYTES = 256 * 1024


class DeadLetter(BaseModel):
    """What a consumer could not take, with why: never silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: Literal["deadletter"] = "deadletter"
    dead_letter_id: UUID = Field(default_factory=uuid4)
    failed_at: datetime = Field(default_factory=utc_now)
    consumer: str
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    source_key: str | None = None
    reason: str
    original_value: str = Field(description="the original bytes, decoded as UTF-8 with replacement")
    original_value_base64: str
    original_size_bytes: int = 0
    original_truncated: bool = Field(
        default=False,
        description="the original was too large to carry whole: only its first bytes are here, and it cannot be replayed",
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def of(
        cls,
        *,
        consumer: str,
        topic: str,
        value: bytes | None,
        reason: str,
        partition: int | None = None,
        offset: int | None = None,
        key: bytes | None = None,
    ) -> DeadLetter:
        value = value or b""
        # text + base64 of a record near the broker's message limit would not fit in one
        # letter, and a letter that cannot be sent would stop the consumer that writes it
        kept = value[:DEAD_LETTER_MAX_ORIGINAL_BYTES]
        return cls(
            consumer=consumer,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            source_key=key.decode("utf-8", "replace")[:1000] if key is not None else None,
            reason=reason[:2000],
            original_value=kept.decode("utf-8", "replace"),
            original_value_base64=base64.b64encode(kept).decode(),
            original_size_bytes=len(value),
            original_truncated=len(kept) < len(value),
        )

