"""A reader of server-sent events (the log API's live follow), for the command line.

The format's only line ends are CR, LF and CRLF; str.splitlines() (and so httpx's
iter_lines) also splits on U+2028, U+0085 and others that a log message may hold, so
the lines are split here. Events carry their `id`, so a dropped stream resumes after
the last one seen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerEvent:
    event: str
    data: str
    id: str | None


def lines(chunks: Iterable[str]) -> Iterator[str]:
    pending = ""
    for chunk in chunks:
        pending += chunk
        # A CR at the end may be the first half of a CRLF still in the next chunk.
        held = pending.endswith("\r")
        parts = _LINE_END.split(pending[:-1] if held else pending)
        pending = parts.pop() + ("\r" if held else "")
        yield from parts
    parts = _LINE_END.split(pending)
    if parts[-1] == "":
        parts.pop()
    yield from parts


def events(stream_lines: Iterable[str]) -> Iterator[ServerEvent]:
    """Events as the format dispatches them: at a blank line, when they hold data."""
    event, data, last_id = "", [], None
    for line in stream_lines:
        if line == "":
            if data:
                yield ServerEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value
    # A stream cut before its blank line dispatches nothing: the event was not complete.
