"""TWS API socket framing: 4-byte big-endian length, then NUL-terminated text fields.

The client opens with `API\\0` and one length-prefixed, NUL-less string such as
`v157..178` (optionally followed by a space and connect options like `+PACEAPI`).
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

API_PREAMBLE = b"API\0"
# TWS refuses anything bigger; a garbage length must not make the fake allocate gigabytes.
MAX_MESSAGE_BYTES = 0xFFFFFF

Field = str | int | float | bool | None

_LENGTH = struct.Struct(">I")
_VERSION_RANGE = re.compile(r"v(\d+)(?:\.\.(\d+))?(?: (.*))?")


class FramingError(ValueError):
    """The peer sent bytes that are not the TWS API protocol."""


@dataclass(frozen=True)
class ClientHello:
    """What the client offered in its preamble."""

    min_version: int
    max_version: int
    connect_options: str


def format_field(value: Field) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def encode_message(fields: Iterable[Field]) -> bytes:
    payload = b"".join(format_field(f).encode() + b"\0" for f in fields)
    return frame(payload)


def frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


def decode_fields(payload: bytes) -> list[str]:
    fields = payload.decode(errors="replace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One length-prefixed payload; `asyncio.IncompleteReadError` when the peer hangs up."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > MAX_MESSAGE_BYTES:
        raise FramingError(f"message of {length} bytes exceeds the protocol maximum")
    return await reader.readexactly(length)


async def read_message(reader: asyncio.StreamReader) -> list[str]:
    return decode_fields(await read_frame(reader))


def parse_hello(text: str) -> ClientHello:
    match = _VERSION_RANGE.fullmatch(text)
    if not match:
        raise FramingError(f"not a version range: {text!r}")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if low > high:
        raise FramingError(f"empty version range: {text!r}")
    return ClientHello(low, high, match.group(3) or "")


async def read_hello(reader: asyncio.StreamReader) -> ClientHello:
    preamble = await reader.readexactly(len(API_PREAMBLE))
    if preamble != API_PREAMBLE:
        raise FramingError(f"expected {API_PREAMBLE!r}, got {preamble!r}")
    return parse_hello((await read_frame(reader)).decode(errors="replace"))
