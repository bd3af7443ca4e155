"""A run's log record as one readable terminal line, the way the run page shows it:
time (UTC, to the millisecond), level, step, message, then the fields as compact JSON.

A message that is a whole JSON object (a logger that serialised its record) reads as
its text, with the rest among the fields, as on the page. Text from the network never
reaches the terminal raw: control characters (escape sequences, a carriage return that
would overwrite the line) are shown escaped, and a line stays one line.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from rich.text import Text

LEVEL_STYLES = {"DEBUG": "dim", "INFO": "cyan", "WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold white on red"}
MESSAGE_KEYS = ("message", "msg", "event")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def safe(text: Any) -> str:
    """Text for one terminal line: newlines as \\n, other control characters as \\xNN."""
    return _CONTROL.sub(_escaped, text if isinstance(text, str) else str(text))


def clock(value: Any) -> str:
    """`14:30:05.123` (UTC), like the page; the text as it came when it is not a time."""
    if not isinstance(value, str):
        return "—"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return safe(value)
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def _embedded_object(message: str) -> dict | None:
    text = message.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def parts(record: dict[str, Any]) -> tuple[str, str, str, str, dict[str, Any]]:
    """(time, level, step, message, fields) of a record as the log API returns it."""
    fields = record.get("fields")
    fields = dict(fields) if isinstance(fields, dict) else ({"fields": fields} if fields is not None else {})
    message = record.get("message")
    message = message if isinstance(message, str) else ""
    inner = _embedded_object(message)
    if inner is not None:
        key = next((k for k in MESSAGE_KEYS if isinstance(inner.get(k), str)), None)
        message = inner.pop(key) if key else ""
        fields = {**inner, **fields}
    level = safe(record.get("level") or "INFO").upper()
    step = record.get("step_name")
    return clock(record.get("occurred_at")), level, safe(step) if step else "-", safe(message), fields


def compact_json(fields: dict[str, Any]) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False, default=str)


def log_line(record: dict[str, Any]) -> Text:
    """One line; rich drops the styles when the output is not a terminal."""
    time, level, step, message, fields = parts(record)
    line = Text()
    line.append(time, style="dim")
    line.append(" ")
    line.append(f"{level:<8}", style=LEVEL_STYLES.get(level, ""))
    line.append(" ")
    line.append(step, style="magenta")
    line.append("  ")
    line.append(message)
    if fields:
        line.append("  ")
        line.append(safe(compact_json(fields)), style="dim")
    return line
