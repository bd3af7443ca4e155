"""The contracts in shared/: strict producers, tolerant consumers, readable reasons."""

import base64
import json

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from shared.database import DatabaseUrlError, describe_database, normalize_database_url
from shared.events import (
    ArtifactCreated,
    DeadLetter,
    EventDecodeError,
    LogRecorded,
    RunRequested,
    StepStarted,
    decode_event,
)
from shared.http import bearer_auth, install_error_handlers

pytestmark = pytest.mark.unit
ENVELOPE = {"workflow_id": "ibkr_trading_signal_workflow", "execution_id": "run-1"}


def test_producers_reject_unknown_fields():
    with pytest.raises(ValidationError, match="extra"):
        RunRequested(**ENVELOPE, trigger="manual", surprise=1)


def test_consumers_ignore_unknown_fields():
    data = json.loads(StepStarted(**ENVELOPE, step_name="fetch_market_data").to_bytes())
    data["added_in_a_later_version"] = {"x": 1}
    event = decode_event(json.dumps(data).encode())
    assert isinstance(event, StepStarted) and event.step_name == "fetch_market_data"


def test_events_round_trip_with_their_envelope():
    event = LogRecorded(**ENVELOPE, step_name="s", level="WARNING", message="m", fields={"nested": {"a": [1, 2]}})
    decoded = decode_event(event.to_bytes())
    assert decoded == event and decoded.fields["nested"] == {"a": [1, 2]}
    assert event.key == b"run-1" and event.occurred_at.tzinfo is not None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"{not json", "not valid UTF-8 JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"event_type": "nope"}', "unknown event_type 'nope'"),
        (b'{"event_type": "run.requested", "workflow_id": "w"}', "execution_id: Field required"),
    ],
)
def test_undecodable_values_get_a_readable_reason(raw, reason):
    with pytest.raises(EventDecodeError, match=reason):
        decode_event(raw)


def test_an_event_on_the_wrong_topic_is_refused():
    raw = RunRequested(**ENVELOPE, trigger="manual").to_bytes()
    with pytest.raises(EventDecodeError, match="does not belong here"):
        decode_event(raw, expected=(ArtifactCreated,))


def test_an_artifact_has_inline_payload_or_stored_content_not_both():
    with pytest.raises(ValidationError, match="either an inline payload or a uri"):
        ArtifactCreated(**ENVELOPE, name="n", kind="dataset", payload={"a": 1}, uri="file:///x",
                        size_bytes=1, sha256="0" * 64)
    with pytest.raises(ValidationError, match="needs size_bytes and sha256"):
        ArtifactCreated(**ENVELOPE, name="n", kind="dataset", uri="file:///x")
    with pytest.raises(ValidationError, match="inline payload is larger"):
        ArtifactCreated(**ENVELOPE, name="n", kind="dataset", payload="x" * 300_000)


def test_symbols_in_run_params_are_validated():
    with pytest.raises(ValidationError):
        RunRequested(**ENVELOPE, trigger="manual", params={"symbols": ["not a symbol"]})


def test_a_dead_letter_keeps_the_original_bytes_and_the_reason():
    letter = DeadLetter.of(consumer="c", topic="ibflow.logs", value=b"\xffbad", reason="why", partition=2, offset=7,
                           key=b"run-1")
    assert base64.b64decode(letter.original_value_base64) == b"\xffbad"
    assert (letter.reason, letter.source_partition, letter.source_offset, letter.source_key) == ("why", 2, 7, "run-1")


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://u:secret@db:5433/ibflow",
        "postgres://u:secret@db:5433/ibflow",
        "postgresql+asyncpg://u:secret@db:5433/ibflow",
        "postgresql+psycopg2://u:secret@db:5433/ibflow",
    ],
)
def test_the_database_url_forms_people_paste(raw):
    url = normalize_database_url(raw)
    assert url.drivername == "postgresql+asyncpg"
    described = describe_database(url)
    assert (described["host"], described["port"], described["database"]) == ("db", 5433, "ibflow")
    assert "secret" not in json.dumps(described) and "***" in described["url"]


def test_libpq_sslmode_becomes_asyncpg_ssl():
    assert normalize_database_url("postgresql://h/d?sslmode=require").query == {"ssl": "require"}


@pytest.mark.parametrize("raw", ["mysql://h/d", "not a url"])
def test_other_urls_are_refused_clearly(raw):
    with pytest.raises(DatabaseUrlError):
        normalize_database_url(raw)


def make_app(token: str | None) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/mutate", dependencies=[Depends(bearer_auth(SecretStr(token) if token else None))])
    async def mutate() -> dict:
        return {"ok": True}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("secret detail")

    return TestClient(app, raise_server_exceptions=False)


def test_mutations_need_the_bearer_token_when_one_is_set():
    client = make_app("t0ken")
    assert client.post("/mutate").status_code == 401
    assert client.post("/mutate", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/mutate", headers={"Authorization": "Bearer t0ken"}).status_code == 200
    assert "IBFLOW_API_TOKEN" in client.post("/mutate").json()["error"]


def test_no_token_configured_means_open():
    assert make_app(None).post("/mutate").status_code == 200


def test_unexpected_errors_are_json_without_their_details():
    response = make_app(None).get("/boom")
    assert response.status_code == 500
    assert response.json()["error"].startswith("internal error (RuntimeError)")
    assert "secret detail" not in response.text
