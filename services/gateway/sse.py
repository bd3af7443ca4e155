"""Reading a server-sent event stream (the artifacts service's live log follow)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

# The only line ends of the event stream format; str.splitlines() (and so httpx's
# aiter_lines) also splits on U+2028, U+0085 and others that a log message may hold.
_LINE_END = re.compile(r"\r\n|\r|\n")


async def sse_lines(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """The lines of an event stream read as text chunks, split where the format says."""
    pending = ""
    async for chunk in chunks:
        pending += chunk
        # A CR at the end may be the first half of a CRLF still in the next chunk.
        held = pending.endswith("\r")
        lines = _LINE_END.split(pending[:-1] if held else pending)
        pending = lines.pop() + ("\r" if held else "")
        for line in lines:
            yield line
    lines = _LINE_END.split(pending)
    if lines[-1] == "":
        lines.pop()
    for line in lines:
        yield line


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) per event; comments and `id`/`retry` lines are skipped."""
    event, data = "message", []
    async for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value or "message"
        elif name == "data":
            data.append(value)
    if data:
        yield event, "\n".join(data)
