"""A run as of a past close: its market data ends at that date, and nothing after it
reaches the features, the models or the signals."""

import csv
import datetime
import gzip
import io

import pytest

from services.signals.market_data.sample_file import SampleFileProvider, sample_file_path
from services.signals.workflow.runner import RunResources, run_workflow
from services.signals.workflow.trading_signal import WORKFLOW, WORKFLOW_ID
from shared.artifact_store import ArtifactStore
from shared.events import RunParams, RunRequested

pytestmark = pytest.mark.unit

AS_OF = datetime.date(2012, 6, 1)
SYMBOLS = ["AAPL", "MSFT"]


class Recorder:
    def __init__(self) -> None:
        self.events = []

    async def __call__(self, event) -> None:
        self.events.append(event)

    def artifact(self, name: str):
        return next(e for e in self.events if e.event_type == "artifact.created" and e.name == name)

    def signals(self) -> list:
        return [e for e in self.events if e.event_type == "signal.generated"]


async def no_previous_run(**_):
    return None


def perturbed_copy(target) -> None:
    """The sample file with every price after AS_OF halved and every volume tripled."""
    with gzip.open(sample_file_path(), "rt", newline="") as source:
        rows = list(csv.DictReader(source))
    for row in rows:
        if datetime.date.fromisoformat(row["Date"]) > AS_OF:
            for column in ("Open", "High", "Low", "Close", "Adj Close"):
                row[column] = str(float(row[column]) / 2)
            row["Volume"] = str(int(row["Volume"]) * 3)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with gzip.open(target, "wt", newline="") as out:
        out.write(text.getvalue())


async def run_as_of(store, as_of, path=None, execution_id="as-of"):
    provider = SampleFileProvider(path)
    await provider.start()
    resources = RunResources(
        provider=provider, store=store, watchlist=tuple(SYMBOLS), history_days=3 * 365, step_timeout_seconds=120,
        inline_max_bytes=64 * 1024, previous_signals=no_previous_run,
    )
    request = RunRequested(workflow_id=WORKFLOW_ID, execution_id=execution_id, trigger="backfill",
                           params=RunParams(symbols=SYMBOLS, as_of=as_of))
    recorder = Recorder()
    outcome = await run_workflow(WORKFLOW, request, resources, recorder)
    return outcome, recorder


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ArtifactStore:
    return ArtifactStore.from_url(tmp_path_factory.mktemp("store").as_uri())


@pytest.fixture(scope="module")
async def original(store):
    return await run_as_of(store, AS_OF, execution_id="as-of-original")


@pytest.fixture(scope="module")
async def perturbed(store, tmp_path_factory):
    path = tmp_path_factory.mktemp("perturbed") / "stocks.csv.gz"
    perturbed_copy(path)
    return await run_as_of(store, AS_OF, path, execution_id="as-of-perturbed")


def test_the_dataset_ends_at_the_as_of_date(original):
    outcome, recorder = original
    assert outcome.status == "succeeded", outcome.error
    dataset = recorder.artifact("market_data")
    assert (dataset.metadata["end"], dataset.metadata["as_of"]) == ("2012-06-01", "2012-06-01")
    [started] = [e for e in recorder.events if e.event_type == "run.started"]
    assert started.params == {"symbols": SYMBOLS, "as_of": "2012-06-01"}


def test_the_signals_are_as_of_that_date(original):
    _, recorder = original
    assert [(s.symbol, s.as_of) for s in recorder.signals()] == [(s, "2012-06-01") for s in SYMBOLS]
    payload = recorder.artifact("signals").payload
    assert payload["as_of"] == "2012-06-01"


def test_prices_after_the_date_change_nothing_the_run_computes(original, perturbed):
    (_, before), (outcome, after) = original, perturbed
    assert outcome.status == "succeeded", outcome.error
    assert after.artifact("signals").payload == before.artifact("signals").payload
    assert after.artifact("features").payload == before.artifact("features").payload
    assert after.artifact("model").payload == before.artifact("model").payload
    assert [s.model_dump(exclude={"event_id", "occurred_at", "execution_id"}) for s in after.signals()] == [
        s.model_dump(exclude={"event_id", "occurred_at", "execution_id"}) for s in before.signals()
    ]


async def test_a_date_the_data_has_not_reached_fails_the_run_with_the_reason(store):
    outcome, _ = await run_as_of(store, datetime.date(2013, 3, 4), execution_id="as-of-future")
    assert outcome.status == "failed"
    assert "no bars as of 2013-03-04: the sample file covers" in outcome.error
