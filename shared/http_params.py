"""Query, path and body value types the services share, so that what their OpenAPI
documents promise is exactly what they accept, and nothing accepted can make
PostgreSQL fail: no NUL or other control characters, no instant it cannot convert, no
integer beyond `bigint`.

Each type carries its rule twice, once for pydantic to enforce and once, the same
rule, for the OpenAPI document (a `pattern`), so clients and fuzzers know it too.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BeforeValidator, Field, WithJsonSchema

# Text without C0 control characters or DEL: PostgreSQL refuses NUL outright, and the
# others have no business in an identifier or a filter.
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"
_PLAIN = r"[^/\\\x00-\x1f\x7f]"
_PLAIN_NOT_DOT = r"[^/\\\x00-\x1f\x7f.]"
# An id that travels in a path: plain text without slashes or backslashes, and not `.`
# or `..` (spelled without look-ahead, which pydantic's regex engine does not have).
PATH_ID = rf"^({_PLAIN_NOT_DOT}{_PLAIN}*|\.{_PLAIN_NOT_DOT}{_PLAIN}*|\.\.{_PLAIN}+)$"

BIGINT_MAX = 2**63 - 1
# A non-negative id in decimal, as cursors carry one; `bigint_of` reads it.
BIGINT_DIGITS = r"[0-9]{1,19}"


def bigint_of(digits: str) -> int:
    """The id that `BIGINT_DIGITS` text names; past the largest bigint every id sorts
    before it, and so it does before the largest bigint."""
    return min(int(digits), BIGINT_MAX)


def text_query(max_length: int, description: str | None = None, *, min_length: int = 1) -> Any:
    """A filter value: plain text of bounded length."""
    return Query(min_length=min_length, max_length=max_length, pattern=PLAIN_TEXT, description=description)


def id_path(max_length: int, description: str | None = None) -> Any:
    return Path(min_length=1, max_length=max_length, pattern=PATH_ID, description=description)


# --- numbers in JSON bodies -------------------------------------------------------------


def whole_number(value: Any) -> int:
    """What JSON Schema calls an integer: 20 or 20.0, not "20", true or 20.5."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("expected an integer")


def whole_number_in(low: int, high: int) -> Any:
    """An integer from `low` to `high`, bounds stated in the schema (the validator goes
    outside the bounds: the other way round pydantic cannot write them as minimum/maximum)."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(whole_number)]


# --- instants -------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}):(?P<second>\d{2})(?P<fraction>\.\d+)?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})"
)
# Every offset is under a day, so any instant dated strictly between these two local
# dates converts to UTC inside Python's (and PostgreSQL's) range.
FIRST_DATE, LAST_DATE = date(1, 1, 2), date(9999, 12, 30)
INSTANT_DESCRIPTION = (
    f"RFC 3339 with an offset (`2026-01-02T15:04:05Z`), dated {FIRST_DATE.isoformat()} to {LAST_DATE.isoformat()}"
)


def parse_instant(value: Any) -> datetime:
    """An RFC 3339 date-time with its offset; nothing else a datetime parser would take
    (no Unix times, no naive times) and nothing outside the range every layer can hold."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    if not isinstance(value, str) or (match := _RFC3339.fullmatch(value)) is None:
        raise ValueError(f"expected {INSTANT_DESCRIPTION}")
    fraction = (match["fraction"] or "")[:7]  # microseconds: PostgreSQL keeps no more
    offset = "+00:00" if match["offset"] in "Zz" else match["offset"]
    second = int(match["second"])
    leap = second == 60  # a leap second is the instant after the minute's last second
    text = f"{match['date']}T{match['time']}:{59 if leap else second:02d}{fraction}{offset}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a real date or time; expected {INSTANT_DESCRIPTION}") from None
    if not FIRST_DATE <= parsed.date() <= LAST_DATE:
        raise ValueError(f"out of range; expected {INSTANT_DESCRIPTION}")
    return parsed + timedelta(seconds=1) if leap else parsed


Instant = Annotated[
    datetime,
    BeforeValidator(parse_instant),
    WithJsonSchema({
        "type": "string",
        "format": "date-time",
        # The same range as parse_instant, for the document: not year 0, not the first or last day.
        "pattern": r"^(?!0000-|0001-01-01|9999-12-31)",
        "description": INSTANT_DESCRIPTION,
    }),
]
