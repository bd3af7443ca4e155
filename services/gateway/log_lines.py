"""A run's log record as a readable line: time, level, step, message, a preview of its
fields, and links to the artifacts it mentions.

A record mentions an artifact through a field named like `artifact_id` or
`artifacts`: a UUID names the artifact itself, any other string the artifact of that
name in the record's step (what the signals service writes when a step ends).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from services.gateway.formatting import fmt_clock, fmt_time
from services.gateway.json_tree import embedded_json
from shared.bounded_json import clean_text, scalar_text

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ARTIFACT_FIELDS = frozenset({"artifact", "artifacts", "artifact_id", "artifact_ids", "artifact_name", "artifact_names"})
MESSAGE_KEYS = ("message", "msg", "event")
PREVIEW_FIELDS = 4
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


@dataclass(frozen=True)
class Mention:
    label: str
    href: str
    # What the artifact side looks for to link back: its id, or "<step>/<name>".
    key: str


@dataclass(frozen=True)
class LogLine:
    id: Any
    occurred_at: str
    timestamp: str
    time: str
    level: str
    step: str | None
    message: str
    logger: str | None
    fields: dict[str, Any]
    preview: list[tuple[str, str]] = field(default_factory=list)
    mentions: list[Mention] = field(default_factory=list)

    @property
    def mention_keys(self) -> list[str]:
        return [m.key for m in self.mentions]


def log_line(record: dict[str, Any], execution_id: str) -> LogLine:
    """Any record renders: text that cannot be encoded is cleaned, numbers of any size are
    text, and a message that only looks like JSON (4,990 `[` then `]`) stays text."""
    fields = record.get("fields")
    fields = dict(fields) if isinstance(fields, dict) else ({"fields": fields} if fields is not None else {})
    message = record.get("message")
    message = clean_text(message) if isinstance(message, str) else ""
    # A message that is a whole JSON object (a logger that serialised it) reads as its
    # text, with the rest among the fields.
    inner = embedded_json(message)
    if isinstance(inner, dict):
        text_key = next((k for k in MESSAGE_KEYS if isinstance(inner.get(k), str)), None)
        message = inner.pop(text_key) if text_key else ""
        fields = {**inner, **fields}
    level = _text(record.get("level") or "INFO").upper()
    step = _text(record.get("step_name")) if record.get("step_name") is not None else None
    logger = record.get("logger")
    return LogLine(
        id=_record_id(record.get("id")),
        occurred_at=_text(record.get("occurred_at") or ""),
        timestamp=fmt_time(record.get("occurred_at")),
        time=fmt_clock(record.get("occurred_at")),
        level=level,
        step=step,
        message=message,
        logger=_text(logger) if logger is not None else None,
        fields=fields,
        preview=[(_text(k), _preview(v)) for k, v in list(fields.items())[:PREVIEW_FIELDS]],
        mentions=_mentions(fields, step, execution_id),
    )


def _preview(value: Any) -> str:
    if isinstance(value, dict):
        return "{…}" if value else "{}"
    if isinstance(value, list):
        return f"[{len(value)}]"
    text = _text(value)
    if isinstance(value, str) and embedded_json(text) is not None:
        return "{…}" if text.strip().startswith("{") else "[…]"
    return text if len(text) <= 48 else text[:47] + "…"


def _text(value: Any) -> str:
    return clean_text(value) if isinstance(value, str) else scalar_text(value)


def _record_id(value: Any) -> int | str:
    """The API's ids are integers; anything else is kept as text so it still renders."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return value
    return _text(value)


def _mentions(fields: dict[str, Any], step: str | None, execution_id: str) -> list[Mention]:
    mentions: list[Mention] = []
    for key, value in fields.items():
        if key not in ARTIFACT_FIELDS:
            continue
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str) or not item:
                continue
            item = clean_text(item)
            if _UUID.match(item):
                mentions.append(Mention(label=f"artifact {item[:8]}", href=f"/artifacts/{item}", key=item.lower()))
            elif step:
                query = urlencode({"step": step, "name": item})
                mentions.append(Mention(label=item, href=f"/ui/runs/{quote(execution_id, safe='')}/artifact?{query}",
                                        key=f"{step}/{item}"))
    return mentions


def level_rank(level: str | None) -> int:
    try:
        return LEVELS.index(_text(level).upper())
    except ValueError:
        return 1


def matches(record: dict[str, Any], *, level: str | None, step: str | None, q: str | None) -> bool:
    """The log API's filters, for records that arrive on the live stream."""
    if level and level_rank(record.get("level")) < level_rank(level):
        return False
    if step and record.get("step_name") != step:
        return False
    if q and q.lower() not in _text(record.get("message") or "").lower():
        return False
    return True
