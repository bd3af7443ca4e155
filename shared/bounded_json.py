"""JSON values that can always be parsed, held, served and shown, whatever was stored.

Rows stored before the event bounds existed (or written by hand) may hold values that
break ordinary code: nesting that overflows recursive parsers and serializers, integers
too long for Python's `int`/`str` conversion or for any JavaScript reader, lone UTF-16
surrogates that cannot be encoded as UTF-8. Readers apply one rule to them, here:

- a container nested deeper than MAX_DEPTH (the events' own bound, so nothing a valid
  event carries is ever cut) is replaced by the string TRUNCATED, "…";
- an integer outside ±MAX_SAFE_INTEGER becomes its decimal text, and a number that is
  not finite (`1e400` read as a float) its JSON text;
- in strings and keys, a lone surrogate or a NUL becomes U+FFFD.

Every walk here is iterative and the parser never sees more than MAX_DEPTH levels, so
no value can make them recurse.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from shared.event_bounds import MAX_DEPTH, MAX_SAFE_INTEGER

TRUNCATED = "…"
# Python refuses to turn longer digit strings into an int (sys.get_int_max_str_digits).
_PYTHON_INT_DIGITS = 4300
_SAFE_DIGITS = len(str(MAX_SAFE_INTEGER))
# The JSON tokens that matter for nesting: whole strings (so brackets inside them are
# skipped in C, not in a Python loop) and the brackets themselves.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")
_UNSHOWABLE = re.compile("[\x00\ud800-\udfff]")


def nesting_depth(text: str, *, stop_above: int | None = None) -> int:
    """How deep the brackets of JSON text nest (strings skipped); stops counting once
    it passes `stop_above`. Text that is not JSON still gets a number."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    return deepest
        elif token in "]}":
            depth -= 1
    return deepest


def loads(text: str | bytes) -> Any:
    """Parse JSON text under the rule above. Raises ValueError for text that is not
    JSON, and nothing else."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", "replace")
    if nesting_depth(text, stop_above=MAX_DEPTH) > MAX_DEPTH:
        text = _cut_below(text, MAX_DEPTH)
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=str)
    except RecursionError:  # only reachable for text that is not JSON at all
        raise ValueError("not JSON: brackets nest without end") from None
    if _LONE_SURROGATE_ESCAPE.search(text) or "\\u0000" in text:
        value = bounded(value)
    return value


def dumps(value: Any) -> str:
    """JSON text of any value, under the rule above (non-ASCII kept as it is)."""
    return json.dumps(bounded(value), ensure_ascii=False, allow_nan=False)


def bounded(value: Any) -> Any:
    """A copy of a Python value with the rule applied; anything that is not a JSON
    type becomes its text."""
    holder: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(holder, 0, value, 0)]
    while stack:
        parent, slot, node, depth = stack.pop()
        if isinstance(node, dict):
            if depth >= MAX_DEPTH:
                parent[slot] = TRUNCATED
                continue
            copy: dict[str, Any] = {}
            parent[slot] = copy
            for key, child in node.items():
                key = clean_text(key) if isinstance(key, str) else scalar_text(key)
                copy[key] = None  # keeps the keys in their order
                stack.append((copy, key, child, depth + 1))
        elif isinstance(node, (list, tuple)):
            if depth >= MAX_DEPTH:
                parent[slot] = TRUNCATED
                continue
            items: list[Any] = [None] * len(node)
            parent[slot] = items
            stack.extend((items, index, child, depth + 1) for index, child in enumerate(node))
        else:
            parent[slot] = _scalar(node)
    return holder[0]


def clean_text(text: str) -> str:
    """`text` with every lone surrogate and NUL replaced by U+FFFD: always encodable."""
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSHOWABLE.sub("\ufffd", text)


def int_text(value: int) -> str:
    """The decimal text of any int, even one too long for `str()` (which raises past
    4300 digits): such a number is described by its size instead."""
    if value.bit_length() < _PYTHON_INT_DIGITS * 3:  # under 3 bits a digit: always fewer digits than the limit
        return str(value)
    digits = int(value.bit_length() * math.log10(2)) + 1
    return f"{'-' if value < 0 else ''}(an integer of about {digits:,} digits)"


def scalar_text(value: Any) -> str:
    """A value as short text, for keys, cells and labels: never raises. Containers are
    not spelled out (their text could be 5,000 levels deep)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int_text(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return "{…}" if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[…]" if value else "[]"
    try:
        return clean_text(str(value))
    except (ValueError, RecursionError):
        return f"({type(value).__name__})"


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else int_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return clean_text(value)
    return scalar_text(value)


def _int(digits: str) -> int | str:
    if len(digits.lstrip("-")) < _SAFE_DIGITS:
        return int(digits)
    if len(digits) > _PYTHON_INT_DIGITS:
        return digits
    number = int(digits)
    return number if -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER else digits


def _float(text: str) -> float | str:
    number = float(text)
    return number if math.isfinite(number) else text


def _cut_below(text: str, max_depth: int) -> str:
    """JSON text with each container that opens deeper than `max_depth` replaced by
    the JSON string TRUNCATED."""
    pieces: list[str] = []
    kept_from = 0
    depth = 0
    cut_at: int | None = None
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth == max_depth + 1 and cut_at is None:
                cut_at = match.start()
        elif token in "]}":
            if depth == max_depth + 1 and cut_at is not None:
                pieces.append(text[kept_from:cut_at])
                pieces.append(json.dumps(TRUNCATED))
                kept_from, cut_at = match.end(), None
            depth -= 1
    pieces.append(text[kept_from:])
    return "".join(pieces)
