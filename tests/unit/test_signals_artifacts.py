"""Artifact publishing: inline or stored, table JSON, one name per step."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from services.signals.workflow.artifacts import StepArtifacts, table_payload
from services.signals.workflow.emitter import RunEmitter, jsonable
from shared.artifact_store import ArtifactStore

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore.from_url(tmp_path.as_uri())


@pytest.fixture
def published() -> list:
    return []


@pytest.fixture
def artifacts(store, published) -> StepArtifacts:
    async def publish(event):
        published.append(event)

    emitter = RunEmitter(publish, workflow_id="wf", execution_id="exec-a")
    return StepArtifacts(emitter, store, step_name="step", inline_max_bytes=1024)


async def test_small_json_travels_inline(artifacts):
    event = await artifacts.json("small", "metrics", {"accuracy": np.float64(0.5), "n": np.int64(3)})
    assert event.payload == {"accuracy": 0.5, "n": 3} and event.uri is None
    assert event.media_type == "application/json"
    assert (event.workflow_id, event.execution_id, event.step_name) == ("wf", "exec-a", "step")


async def test_large_json_goes_to_the_store_with_its_digest(artifacts, store):
    value = {"rows": [[i, i * 2.5] for i in range(500)]}
    event = await artifacts.json("large", "metrics", value, metadata={"rows": 500})
    assert event.payload is None and event.uri.startswith(store.url)
    assert event.media_type == "application/json" and event.metadata == {"rows": 500}
    blob = await store.verify(event.uri, event.sha256, event.size_bytes)
    assert json.loads(await store.read_bytes(blob.uri)) == value


async def test_content_is_stored_with_its_media_type(artifacts, store):
    event = await artifacts.content("chart", "chart", b"\x89PNG...", "image/png", metadata={"symbol": "IBM"})
    assert (event.media_type, event.size_bytes, event.metadata) == ("image/png", 7, {"symbol": "IBM"})
    assert await store.read_bytes(event.uri) == b"\x89PNG..."


async def test_a_name_is_published_once_per_step(artifacts, published):
    await artifacts.json("signals", "signals", {"a": 1})
    with pytest.raises(ValueError, match="already published an artifact named 'signals'"):
        await artifacts.json("signals", "signals", {"a": 2})
    assert len(published) == 1


async def test_tables_are_marked_for_the_table_renderer(artifacts):
    frame = pd.DataFrame({"symbol": ["IBM"], "close": [1.5]})
    event = await artifacts.table("t", "features", frame, descriptions={"symbol": "Ticker.", "close": "Close."},
                                  metadata={"rows_total": 1})
    assert event.metadata == {"renderer": "table", "rows_total": 1}
    assert event.payload == {
        "columns": [{"name": "symbol", "description": "Ticker."}, {"name": "close", "description": "Close."}],
        "rows": [["IBM", 1.5]],
    }


def test_table_cells_are_plain_json():
    frame = pd.DataFrame(
        {
            "date": [pd.Timestamp("2013-03-01"), pd.Timestamp("2013-03-04 15:30")],
            "value": [np.nan, np.float64(2.0)],
            "count": pd.array([pd.NA, 3], dtype="Int64"),
            "flag": [np.bool_(True), np.bool_(False)],
        }
    )
    payload = table_payload(frame, {"date": "Day."})
    assert payload["columns"][1] == {"name": "value", "description": ""}
    assert payload["rows"] == [["2013-03-01", None, None, True], ["2013-03-04T15:30:00", 2.0, 3, False]]
    json.dumps(payload, allow_nan=False)


def test_jsonable_turns_non_json_numbers_into_null():
    assert jsonable({"a": math.nan, "b": [math.inf, -math.inf, 1.0], "c": np.float32(0.25)}) == {
        "a": None, "b": [None, None, 1.0], "c": 0.25
    }
