"""The bounds every event keeps, checked the same way by producers and consumers.

A value outside them cannot be stored, indexed or rendered safely (a 5,000-deep object
overflows recursive code, a 20-digit integer loses precision in every JavaScript
reader, a NUL cannot be stored in PostgreSQL text, a date in 2099 sorts above every
real run). Producers refuse to build such an event; consumers dead-letter it.

The walk is iterative: it must not itself be the recursion that a hostile value breaks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

# Nesting of one field's value: {"a": {"b": 1}} is 2 deep, a scalar 0.
MAX_DEPTH = 32
# Integers JavaScript, JSON Schema tooling and float-based JSON readers all hold exactly.
MAX_SAFE_INTEGER = 2**53 - 1
# A whole event as it arrives on a topic; Kafka's own default message limit is 1 MB.
MAX_EVENT_BYTES = 1024 * 1024
# Free-form fields, measured as their JSON text (roughly: see `_walk`).
MAX_FIELD_BYTES: Mapping[str, int] = {
    "payload": 256 * 1024,
    "metadata": 64 * 1024,
    "fields": 64 * 1024,
    "params": 16 * 1024,
    "summary": 64 * 1024,
}
MAX_OTHER_FIELD_BYTES = 64 * 1024
# How far ahead of the consumer's clock a producer's `occurred_at` may be.
DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)

# NUL cannot be stored in PostgreSQL text or JSONB; a lone surrogate cannot be encoded as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class BoundsError(ValueError):
    """A value outside the bounds; the message says which and where."""


def check_event_fields(data: Mapping[str, Any]) -> None:
    """Check every top-level field of an event (as a dict of Python or JSON values)."""
    for name, value in data.items():
        if isinstance(value, (dict, list, tuple, str)):
            _walk(str(name), value, MAX_FIELD_BYTES.get(str(name), MAX_OTHER_FIELD_BYTES))
        else:
            _check_scalar(str(name), value)


def _walk(where: str, value: Any, max_bytes: int) -> None:
    # (value, depth, path) on an explicit stack; the size is the sum of strings and keys
    # plus a few bytes per other node: close enough to the JSON text to bound it.
    size = 0
    stack: list[tuple[Any, int, str]] = [(value, 0, where)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            depth += 1
            if depth > MAX_DEPTH:
                raise BoundsError(f"{where}: nested deeper than {MAX_DEPTH} levels (at {path})")
            for key, child in node.items():
                if not isinstance(key, str):
                    key = str(key)
                _check_text(path, key)
                size += len(key) + 4
                stack.append((child, depth, f"{path}.{key[:40]}"))
        elif isinstance(node, (list, tuple)):
            depth += 1
            if depth > MAX_DEPTH:
                raise BoundsError(f"{where}: nested deeper than {MAX_DEPTH} levels (at {path})")
            size += 2
            stack.extend((child, depth, f"{path}[{index}]") for index, child in enumerate(node))
        elif isinstance(node, str):
            _check_text(path, node)
            size += len(node) + 2
        else:
            _check_scalar(path, node)
            size += 8
        if size > max_bytes:
            if where == "payload":
                raise BoundsError(f"inline payload is larger than {max_bytes} bytes; store the content and send its uri")
            raise BoundsError(f"{where}: larger than {max_bytes} bytes")


def storable_text(text: str) -> str:
    """`text` with what no event may hold replaced by U+FFFD, for producers that pass
    on text they did not write (an error message from a data source)."""
    return _UNSTORABLE.sub("\ufffd", text)


def _check_text(path: str, text: str) -> None:
    if (found := _UNSTORABLE.search(text)) is not None:
        what = "a NUL character" if found.group() == "\x00" else "an unpaired UTF-16 surrogate"
        raise BoundsError(f"{path}: text holds {what}")


def _check_scalar(path: str, value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise BoundsError(f"{path}: integer outside ±(2**53 - 1), the range JSON readers hold exactly")
    if isinstance(value, float) and not math.isfinite(value):
        raise BoundsError(f"{path}: {value!r} is not a JSON number")
