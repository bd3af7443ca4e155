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


# `text_keeps_bounds` looks at an event's JSON text for what could break a bound:
# - an escaped NUL or UTF-16 surrogate, a raw NUL, or a surrogate in UTF-8 (json.loads
#   decodes bytes with "surrogatepass");
# - a number whose integer part has 16 digits or more (it may be outside ±(2**53 - 1),
#   or as a float's, overflow), or with an exponent of 3 digits or more (it may overflow
#   to infinity). Python's `re` is slow at scanning for these, so the text is first
#   mapped to the shapes of numbers (digits to "0", "e"/"E" to "e", signs to "+", what
#   may end a JSON value to "d", ...), where they are plain substrings.
# Inside strings these are harmless: they only cost the walk.
_ESCAPED_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_UTF8_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")


def _number_shapes() -> bytes:
    table = bytearray(b"x" * 256)
    shapes = ((b"0123456789", b"0"), (b"eE", b"e"), (b"+-", b"+"), (b" \t\n\r,]}", b"d"), (b".", b"."),
              (b"{[", b"o"), (b":", b"k"))
    for chars, shape in shapes:
        for char in chars:
            table[char] = shape[0]
    return bytes(table)


_NUMBER_SHAPES = _number_shapes()
_DIGITS_16 = b"0" * 16
_LONG_DIGIT_RUN = re.compile(rb"0{16,}")
# an exponent of 3 digits or more that ends a value
_LONG_EXPONENT = re.compile(rb"0e\+?000+d")
_SMALLEST_FIELD_BYTES = min(*MAX_FIELD_BYTES.values(), MAX_OTHER_FIELD_BYTES)


class BoundsError(ValueError):
    """A value outside the bounds; the message says which and where."""


def check_event_fields(data: Mapping[str, Any]) -> None:
    """Check every top-level field of an event (as a dict of Python or JSON values)."""
    for name, value in data.items():
        if isinstance(value, (dict, list, tuple, str)):
            _walk(str(name), value, MAX_FIELD_BYTES.get(str(name), MAX_OTHER_FIELD_BYTES))
        else:
            _check_scalar(str(name), value)


def text_keeps_bounds(raw: bytes, value: Any | None) -> bool:
    """Whether the JSON object `raw`, decoded as `value` by json.loads (or None, not
    decoded yet), certainly keeps every bound `check_event_fields` checks, found by
    scanning the text in C instead of walking every node in Python. False means only
    "not proven": walk it.

    - text: no NUL or surrogate can hide from the scans above in UTF-8 JSON (raw
      control characters are not valid JSON); so `raw` must start with "{" and hold no
      NUL byte, or json.loads could have read it as UTF-16 or UTF-32;
    - numbers: an integer of at most 15 digits is within ±(2**53 - 1), and a float
      overflows only with 309 digits or a 3-digit exponent;
    - size: the walk counts a string as its length + 2 (at most its JSON text), a key as
      its length + 4 (its text and colon + 1), a list as 2 (its brackets), any other
      scalar as 8 (its text + 7 at most, and each is followed by its own "," "]" or
      "}"): a bound on every field at once, checked against the smallest limit;
    - depth: at most as many levels as "{" and "[" in the text; when there are more,
      the containers of `value` alone are walked (not every scalar, as `_walk` does).
    """
    if raw[:1] != b"{" or b"\x00" in raw:
        return False
    if b"\\u" in raw and _ESCAPED_UNSTORABLE.search(raw) or b"\xed" in raw and _UTF8_SURROGATE.search(raw):
        return False
    shapes = raw.translate(_NUMBER_SHAPES)
    if _DIGITS_16 in shapes and any(shapes[run.start() - 1] != ord(".") for run in _LONG_DIGIT_RUN.finditer(shapes)):
        return False  # an integer part of 16 digits or more (a fraction's digits follow a ".")
    if _LONG_EXPONENT.search(shapes):
        return False
    # "d" counts every "," "]" "}" (and whitespace, which only loosens the bound)
    if len(raw) + shapes.count(b"k") + 7 * shapes.count(b"d") > _SMALLEST_FIELD_BYTES:
        return False
    # the event object itself is one level above its fields
    return shapes.count(b"o") <= MAX_DEPTH + 1 or (value is not None and _nesting_at_most(value, MAX_DEPTH + 1))


def _nesting_at_most(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return True


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
