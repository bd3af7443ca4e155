"""Opaque page cursors: the keyset of the last row of a page, base64url JSON.

Each list has its own cursor kind, so a cursor from one list given to another is
refused instead of silently paging wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from fastapi import HTTPException


def encode_cursor(kind: str, *keys: Any) -> str:
    values = [key.isoformat() if isinstance(key, datetime) else key for key in keys]
    raw = json.dumps({"k": kind, "v": values}, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, types: tuple[type, ...]) -> tuple[Any, ...]:
    """The keyset a cursor holds, converted to `types`; a 400 for anything malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("k") != kind or len(data.get("v", ())) != len(types):
            raise ValueError
        return tuple(_convert(value, to) for value, to in zip(data["v"], types, strict=True))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise HTTPException(status_code=400, detail=f"invalid cursor for this list: {cursor[:80]!r}") from None


def _convert(value: Any, to: type) -> Any:
    if to is datetime:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError
        return parsed
    if to is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError
        return value
    if not isinstance(value, str):
        raise ValueError
    return to(value)
