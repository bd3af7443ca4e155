"""Framing of the TWS API socket protocol as the fake gateway reads and writes it."""

from __future__ import annotations

import asyncio
import struct

import pytest

from ibflow.fake_ib_gateway.framing import (
    MAX_MESSAGE_BYTES,
    ClientHello,
    FramingError,
    decode_fields,
    encode_message,
    parse_hello,
    read_hello,
    read_message,
)

pytestmark = pytest.mark.unit


def reader_with(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_fields_are_nul_terminated_after_a_big_endian_length() -> None:
    payload = b"17\0AAPL\x001.5\x001\x000\0\0"
    assert encode_message([17, "AAPL", 1.5, True, False, None]) == b"\x00\x00\x00\x11" + payload


def test_decoding_drops_only_the_final_terminator() -> None:
    assert decode_fields(b"4\x002\x00-1\x00\x00") == ["4", "2", "-1", ""]


async def test_messages_are_read_back_one_at_a_time() -> None:
    reader = reader_with(encode_message([49, 1]) + encode_message([9, 1, 42]))
    assert await read_message(reader) == ["49", "1"]
    assert await read_message(reader) == ["9", "1", "42"]
    with pytest.raises(asyncio.IncompleteReadError):
        await read_message(reader)


async def test_an_absurd_length_is_refused_before_reading_it() -> None:
    with pytest.raises(FramingError):
        await read_message(reader_with(struct.pack(">I", MAX_MESSAGE_BYTES + 1)))


@pytest.mark.parametrize(
    ("text", "hello"),
    [
        ("v157..178", ClientHello(157, 178, "")),
        ("v100", ClientHello(100, 100, "")),
        ("v157..178 +PACEAPI", ClientHello(157, 178, "+PACEAPI")),
    ],
)
def test_the_version_range_is_parsed(text: str, hello: ClientHello) -> None:
    assert parse_hello(text) == hello


@pytest.mark.parametrize("text", ["157..178", "v178..157", "vX..178", ""])
def test_a_malformed_version_range_is_refused(text: str) -> None:
    with pytest.raises(FramingError):
        parse_hello(text)


async def test_the_preamble_is_api_then_a_prefixed_range_without_terminator() -> None:
    hello = await read_hello(reader_with(b"API\0" + struct.pack(">I", 9) + b"v157..178"))
    assert hello == ClientHello(157, 178, "")


async def test_a_connection_not_opening_with_api_is_refused() -> None:
    with pytest.raises(FramingError):
        await read_hello(reader_with(b"GET / HTTP/1.1\r\n"))
