"""Page cursors: the keyset of the last row of a page, in a grammar the OpenAPI
document states exactly (a `pattern`), so that every string it admits is a cursor.

A cursor is `<list letter><instant>~<key>`: the letter names its list (a cursor from
one list is not a cursor of another), the instant is microseconds since
0001-01-01T00:00Z in decimal, and the key is a UUID in hex, an integer in decimal, or
text with every character outside `[A-Za-z0-9_-]` written as `.hh` per UTF-8 byte.
Only URL-safe characters, so a cursor needs no escaping in a link.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from fastapi import Query

from shared.http_params import BIGINT_DIGITS, bigint_of

EPOCH = datetime(1, 1, 1, tzinfo=UTC)
_LAST_MICROSECOND = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
_INSTANT = r"[0-9]{1,18}"
_KEY_PATTERNS: dict[type, str] = {
    UUID: r"[0-9a-f]{32}",
    int: BIGINT_DIGITS,
    # No `.00`: PostgreSQL cannot compare text holding NUL.
    str: r"(?:[A-Za-z0-9_-]|\.(?:0[1-9a-f]|[1-9a-f][0-9a-f]))*",
}
_SAFE_TEXT = re.compile(r"[A-Za-z0-9_-]")
_TEXT_PART = re.compile(r"[A-Za-z0-9_-]+|(?:\.[0-9a-f]{2})+")
# Text keys are ids of at most 200 characters: 4 bytes each, 3 characters per byte.
MAX_LENGTH = 2 + 19 + 200 * 4 * 3


@dataclass(frozen=True)
class CursorKind:
    letter: str
    key: type

    @property
    def pattern(self) -> str:
        return rf"^{self.letter}{_INSTANT}~{_KEY_PATTERNS[self.key]}$"

    def query(self) -> Any:
        return Query(max_length=MAX_LENGTH, pattern=self.pattern, description="next_cursor of the previous page")

    def encode(self, instant: datetime, key: Any) -> str:
        micros = (instant - EPOCH) // timedelta(microseconds=1)
        return f"{self.letter}{micros}~{_encode_key(key)}"

    def decode(self, cursor: str) -> tuple[datetime, Any]:
        """The keyset of a cursor that matches `pattern` (the API checked it)."""
        micros, _, key = cursor[1:].partition("~")
        # Past the last instant Python holds, every row sorts before it: the last instant does the same.
        instant = EPOCH + timedelta(microseconds=min(int(micros), _LAST_MICROSECOND))
        return instant, _decode_key(self.key, key)


ARTIFACTS = CursorKind("a", UUID)
BY_EXECUTION = CursorKind("e", str)
RUNS = CursorKind("r", str)
LOGS = CursorKind("l", int)


def _encode_key(key: Any) -> str:
    if isinstance(key, UUID):
        return key.hex
    if isinstance(key, int):
        return str(key)
    return "".join(c if _SAFE_TEXT.fullmatch(c) else "".join(f".{b:02x}" for b in c.encode()) for c in key)


def _decode_key(kind: type, key: str) -> Any:
    if kind is UUID:
        return UUID(hex=key)
    if kind is int:
        return bigint_of(key)
    # Bytes that are not UTF-8 (a hand-made cursor) still name a place in the order.
    return "".join(
        part if not part.startswith(".") else bytes.fromhex(part.replace(".", "")).decode(errors="replace")
        for part in _TEXT_PART.findall(key)
    )
