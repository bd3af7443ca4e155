"""The shared parameter types and the page cursors: what the OpenAPI document says is
valid is exactly what is accepted, and nothing accepted can fail in PostgreSQL."""

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID, uuid4

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI, Query
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from services.artifacts.api import cursors
from services.artifacts.api.deps import execution_id
from shared.http import install_error_handlers
from shared.http_params import PATH_ID, Instant, id_path, parse_instant, text_query

pytestmark = pytest.mark.unit

INSTANT = TypeAdapter(Instant)
INSTANT_SCHEMA = jsonschema_rs.validator_for(INSTANT.json_schema(), validate_formats=True)


# --- instants ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-02T03:04:05Z", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2025-01-02t03:04:05z", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2025-01-02T03:04:05.1234567+00:00", datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC)),
        ("0001-01-02T00:00:00+23:59", datetime(1, 1, 1, 0, 1, tzinfo=UTC)),
    ],
)
def test_rfc3339_instants_are_read_exactly(text, expected):
    assert parse_instant(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "0.5", "1700000000", "2025-01-02", "2025-01-02T03:04:05", "2025-01-02 03:04:05Z", "yesterday",
        "2025-02-30T00:00:00Z", "2025-01-02T03:04:05+24:00",
        # PostgreSQL (and Python) cannot hold these in UTC
        "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0000-06-01T00:00:00Z",
    ],
)
def test_anything_else_is_refused_and_the_schema_agrees(text):
    with pytest.raises(ValidationError):
        INSTANT.validate_python(text)
    assert not INSTANT_SCHEMA.is_valid(text)


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        "{}T{:02d}:{:02d}:{:02d}{}{}".format,
        st.dates().map(str) | st.sampled_from(["0001-01-01", "9999-12-31", "0000-01-01"]),
        st.integers(0, 23), st.integers(0, 59), st.integers(0, 59),
        st.sampled_from(["", ".5", ".123456789"]),
        st.just("Z") | st.builds("{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)),
    )
)
def test_an_instant_is_accepted_exactly_when_the_schema_admits_it(text):
    try:
        INSTANT.validate_python(text)
    except ValidationError:
        accepted = False
    else:
        accepted = True
    assert accepted == INSTANT_SCHEMA.is_valid(text)


# --- cursors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        (cursors.ARTIFACTS, uuid4()),
        (cursors.LOGS, 2**63 - 1),
        (cursors.RUNS, "manual-0123abc"),
        (cursors.BY_EXECUTION, "scheduled-wf-20261218T140000Z"),
        (cursors.RUNS, "ünïcode/with spaces.and~tildes %00 \U0001f600"),
    ],
)
def test_cursors_round_trip_in_url_safe_characters(kind, key):
    when = datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    cursor = kind.encode(when, key)
    assert TypeAdapter(Annotated[str, kind.query()]).validate_python(cursor) == cursor
    assert kind.decode(cursor) == (when, key)
    assert set(cursor) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~")


def test_a_cursor_of_one_list_is_not_a_cursor_of_another():
    cursor = cursors.ARTIFACTS.encode(datetime.now(UTC), uuid4())
    for other in (cursors.RUNS, cursors.BY_EXECUTION, cursors.LOGS):
        with pytest.raises(ValidationError):
            TypeAdapter(Annotated[str, other.query()]).validate_python(cursor)


def test_extreme_but_well_formed_cursors_decode():
    assert cursors.ARTIFACTS.decode("a0~" + "0" * 32) == (cursors.EPOCH, UUID(int=0))
    far, key = cursors.LOGS.decode("l" + "9" * 18 + "~" + "9" * 19)
    assert far.year == 9999 and key == 2**63 - 1
    assert cursors.RUNS.decode("r0~.ff.fe") == (cursors.EPOCH, "\ufffd\ufffd")


@pytest.mark.parametrize("kind", [cursors.ARTIFACTS, cursors.BY_EXECUTION, cursors.RUNS, cursors.LOGS])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_every_string_the_pattern_admits_is_a_cursor(kind, data):
    cursor = data.draw(st.from_regex(kind.pattern, fullmatch=True).filter(lambda c: len(c) <= cursors.MAX_LENGTH))
    instant, key = kind.decode(cursor)
    assert instant.tzinfo is not None and "\x00" not in str(key)


# --- ids in paths and text filters ------------------------------------------------------


@pytest.mark.parametrize("bad", ["..", ".", "../etc/passwd", "/etc/passwd", "a\\b", "a/b", "run\x00", "run\x1b[2J"])
def test_path_tricks_in_an_execution_id_are_refused(bad):
    with pytest.raises(ValidationError):
        TypeAdapter(Annotated[str, id_path(200)]).validate_python(bad)
    assert not jsonschema_rs.validator_for({"type": "string", "pattern": PATH_ID}).is_valid(bad)


def test_ordinary_execution_ids_pass():
    for good in ("manual__2025-01-02T03:04:05+00:00", "scheduled_2025.01.02", "run..1", "...", ".hidden"):
        assert TypeAdapter(Annotated[str, id_path(200)]).validate_python(good) == execution_id(good)


async def test_nul_and_control_characters_in_filters_are_a_json_422():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/things")
    async def things(
        kind: Annotated[str | None, text_query(50)] = None,
        since: Annotated[Instant | None, Query()] = None,
    ) -> dict:
        return {"kind": kind, "since": since}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for params in ({"kind": "a\x00b"}, {"kind": "\x1b[31m"}, {"since": "0.5"},
                       {"since": "0001-01-01T00:00:00+14:00"}, {"kind": "x" * 51}):
            response = await client.get("/things", params=params)
            assert response.status_code == 422, params
            body = response.json()
            assert body["status"] == 422 and body["error"].startswith("invalid request")
        assert (await client.get("/things", params={"kind": "signals", "since": "2025-01-01T00:00:00Z"})).status_code == 200
