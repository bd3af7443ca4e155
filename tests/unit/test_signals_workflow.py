"""`ibkr_trading_signal_workflow` end to end in memory: the sample-file provider, a
temporary artifact store, and a list in place of the broker."""

import csv
import datetime
import io
import json
from xml.etree import ElementTree

import joblib
import pytest

from services.signals.market_data.models import BarSeries, Instrument, MarketDataError, ProviderHealth
from services.signals.market_data.sample_file import SampleFileProvider
from services.signals.workflow.previous_signals import PreviousSignalsUnavailable
from shared.api_models import SignalsDiff
from services.signals.workflow.runner import PreviousSignals, RunResources, run_workflow
from services.signals.workflow.trading_signal import INLINE_TABLE_ROWS, WORKFLOW, WORKFLOW_ID
from shared.artifact_store import ArtifactStore
from shared.events import RunParams, RunRequested

pytestmark = pytest.mark.unit

STEPS = ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]
EXPECTED_ARTIFACTS = {
    ("fetch_market_data", "market_data", "dataset", "text/csv"),
    ("fetch_market_data", "market_data_summary", "dataset", "application/json"),
    ("compute_features", "features.csv", "features", "text/csv"),
    ("compute_features", "features", "features", "application/json"),
    ("generate_signals", "model", "model", "application/json"),
    ("generate_signals", "model.joblib", "model", "application/octet-stream"),
    ("generate_signals", "walk_forward_folds", "metrics", "application/json"),
    ("generate_signals", "signals", "signals", "application/json"),
    ("publish_signals", "chart_AAPL", "chart", "image/svg+xml"),
    ("publish_signals", "chart_IBM", "chart", "image/svg+xml"),
    ("publish_signals", "report", "report", "text/markdown"),
    ("publish_signals", "signals_diff", "signals_diff", "application/json"),
}


class Recorder:
    def __init__(self) -> None:
        self.events = []

    async def __call__(self, event) -> None:
        self.events.append(event)

    def of_type(self, event_type: str) -> list:
        return [e for e in self.events if e.event_type == event_type]

    def artifact(self, name: str):
        return next(e for e in self.of_type("artifact.created") if e.name == name)


class PreviousRun:
    def __init__(self, result) -> None:
        self.result = result
        self.asked = []

    async def __call__(self, *, workflow_id: str, execution_id: str):
        self.asked.append((workflow_id, execution_id))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


async def started_provider() -> SampleFileProvider:
    provider = SampleFileProvider()
    await provider.start()
    return provider


def resources_with(provider, store, previous) -> RunResources:
    return RunResources(
        provider=provider,
        store=store,
        watchlist=("AAPL", "MSFT", "IBM", "GOOG"),
        history_days=3 * 365,
        step_timeout_seconds=120,
        inline_max_bytes=64 * 1024,
        previous_signals=previous,
    )


def run_request(symbols, execution_id) -> RunRequested:
    return RunRequested(
        workflow_id=WORKFLOW_ID, execution_id=execution_id, trigger="manual", params=RunParams(symbols=symbols)
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ArtifactStore:
    return ArtifactStore.from_url(tmp_path_factory.mktemp("store").as_uri())


@pytest.fixture(scope="module")
async def run(store):
    """AAPL and IBM, plus a symbol the file does not have; a previous run that said BUY for IBM."""
    recorder = Recorder()
    previous = PreviousRun(
        PreviousSignals(
            execution_id="exec-previous",
            payload={"signals": [{"symbol": "IBM", "action": "BUY", "strength": 0.9}]},
        )
    )
    resources = resources_with(await started_provider(), store, previous)
    outcome = await run_workflow(WORKFLOW, run_request(["AAPL", "IBM", "XYZ"], "exec-wf-1"), resources, recorder)
    return outcome, recorder, previous


def test_the_run_goes_through_its_four_steps_and_is_partial_for_the_unknown_symbol(run):
    outcome, recorder, _ = run
    assert outcome.status == "partial", outcome.error
    lifecycle = [(e.event_type, e.step_name) for e in recorder.events if e.topic == "ibflow.runs.events"]
    expected = [("run.started", None)]
    for step in STEPS:
        expected += [("step.started", step), ("step.succeeded", step)]
    assert lifecycle == expected + [("run.partial", None)]
    assert outcome.summary["signals"].keys() == {"AAPL", "IBM"}
    reason = "unknown symbol: the sample file has AAPL, FB, GOOG, IBM, MSFT"
    assert outcome.summary["failed_symbols"] == {"XYZ": reason}
    [partial] = [e for e in recorder.events if e.event_type == "run.partial"]
    assert [f.model_dump() for f in partial.failed_items] == [
        {"item": "XYZ", "step": "fetch_market_data", "reason": reason, "code": None}
    ]
    assert partial.summary == outcome.summary


def test_each_step_leaves_its_artifacts_naming_the_run(run):
    _, recorder, _ = run
    artifacts = recorder.of_type("artifact.created")
    assert {(a.step_name, a.name, a.kind, a.media_type) for a in artifacts} == EXPECTED_ARTIFACTS
    assert {a.step_name for a in artifacts} == set(STEPS)
    for artifact in artifacts:
        assert (artifact.workflow_id, artifact.execution_id) == (WORKFLOW_ID, "exec-wf-1")
        assert len(artifact.to_bytes()) < 70_000, artifact.name


async def test_stored_content_is_in_the_store_under_its_sha256(run, store):
    _, recorder, _ = run
    stored = [a for a in recorder.of_type("artifact.created") if a.uri]
    assert {a.name for a in stored} == {
        "market_data", "features.csv", "model.joblib", "chart_AAPL", "chart_IBM", "report"
    }
    for artifact in stored:
        assert artifact.payload is None
        blob = await store.verify(artifact.uri, artifact.sha256, artifact.size_bytes)
        assert blob.size_bytes == artifact.size_bytes > 0
    for symbol in ("AAPL", "IBM"):
        chart = ElementTree.fromstring(await store.read_bytes(recorder.artifact(f"chart_{symbol}").uri))
        assert chart.tag == "{http://www.w3.org/2000/svg}svg"
        assert chart.findtext("{http://www.w3.org/2000/svg}title").startswith(f"{symbol}: ")


def test_signals_are_out_before_any_chart_is_drawn(run):
    """Charts are the run's slowest output: the signals artifact and the signal events
    must not wait for them."""
    _, recorder, _ = run
    order = [(e.event_type, getattr(e, "name", None)) for e in recorder.events]
    first_chart = next(i for i, (kind, name) in enumerate(order) if name and name.startswith("chart_"))
    assert order.index(("artifact.created", "signals")) < first_chart
    assert max(i for i, (kind, _) in enumerate(order) if kind == "signal.generated") < first_chart


async def test_the_dataset_has_the_bars_and_says_where_they_came_from(run, store):
    _, recorder, _ = run
    dataset = recorder.artifact("market_data")
    meta = dataset.metadata
    assert meta["symbols"] == ["AAPL", "IBM"]
    assert meta["source"] == "bokeh-sampledata stocks.csv.gz" and meta["provider"] == "sample_file"
    assert meta["replayed"] is True and meta["delayed"] is False
    assert meta["end"] == "2013-03-01" and meta["start"] > "2010-02-01"
    assert meta["bar_count"] == sum(meta["bars_per_symbol"].values())
    assert meta["failed_symbols"] == {"XYZ": "unknown symbol: the sample file has AAPL, FB, GOOG, IBM, MSFT"}

    rows = list(csv.DictReader(io.StringIO((await store.read_bytes(dataset.uri)).decode())))
    assert len(rows) == meta["bar_count"]
    assert list(rows[0]) == ["symbol", "date", "open", "high", "low", "close", "volume"]
    last_aapl = [r for r in rows if r["symbol"] == "AAPL"][-1]
    assert (last_aapl["date"], float(last_aapl["close"])) == ("2013-03-01", 430.47)


def test_table_artifacts_are_bounded_tables_with_described_columns(run):
    _, recorder, _ = run
    for name in ("market_data_summary", "features", "walk_forward_folds"):
        artifact = recorder.artifact(name)
        assert artifact.metadata["renderer"] == "table"
        columns, rows = artifact.payload["columns"], artifact.payload["rows"]
        assert all(set(c) == {"name", "description"} and c["description"] for c in columns), name
        assert 0 < len(rows) <= INLINE_TABLE_ROWS
        assert all(len(row) == len(columns) for row in rows)
    features = recorder.artifact("features")
    names = [c["name"] for c in features.payload["columns"]]
    assert names[:2] == ["symbol", "date"] and "rsi_14" in names
    assert {row[0] for row in features.payload["rows"]} == {"AAPL", "IBM"}
    assert features.metadata["rows_total"] > features.metadata["rows_shown"] == len(features.payload["rows"])
    assert features.payload["rows"][-1][1] == "2013-03-01"


def test_the_model_artifact_describes_the_model_and_its_backtest(run):
    _, recorder, _ = run
    artifact = recorder.artifact("model")
    model = artifact.payload
    assert {"model_type", "params", "training_window", "feature_names", "folds", "metrics", "backtest"} <= set(model)
    assert model["metrics"]["n_folds"] == len(model["folds"]) > 0
    assert {"pooled", "per_symbol"} <= set(model["backtest"])
    assert "one model per symbol" in model["scope"] and artifact.metadata["scope"] == model["scope"]


def test_the_model_card_gives_its_verdict_overall_and_per_symbol(run):
    _, recorder, _ = run
    artifact = recorder.artifact("model")
    model = artifact.payload
    assert list(model)[:2] == ["verdict", "verdict_text"]
    assert model["verdict"] in ("better", "no_better", "worse") and artifact.metadata["verdict"] == model["verdict"]
    assert model["verdict_text"].startswith("The model did ")
    assert [row["symbol"] for row in model["per_symbol"]] == ["AAPL", "IBM"]
    for row in model["per_symbol"]:
        assert row["verdict_text"].startswith(f"{row['symbol']}'s model did ")
        assert {"accuracy", "baseline_accuracy", "up_rate", "n_predictions", "verdict"} <= set(row)
    assert {fold["symbol"] for fold in model["folds"]} == {"AAPL", "IBM"}


async def test_the_serialized_model_loads_and_predicts(run, store):
    _, recorder, _ = run
    artifact = recorder.artifact("model.joblib")
    bundle = joblib.load(io.BytesIO(await store.read_bytes(artifact.uri)))
    assert bundle["feature_names"] == artifact.metadata["feature_names"]
    assert set(bundle["estimators"]) == {"AAPL", "IBM"}
    assert all(hasattr(estimator, "predict_proba") for estimator in bundle["estimators"].values())


def test_one_signal_event_per_symbol_matching_the_signals_artifact(run):
    _, recorder, _ = run
    signals = recorder.of_type("signal.generated")
    assert [s.symbol for s in signals] == ["AAPL", "IBM"]
    by_symbol = {s["symbol"]: s for s in recorder.artifact("signals").payload["signals"]}
    for event in signals:
        assert event.step_name == "publish_signals" and event.topic == "ibflow.signals"
        expected = by_symbol[event.symbol]
        assert (event.action, event.strength, event.price, event.as_of) == (
            expected["action"], expected["strength"], expected["last_price"], "2013-03-01"
        )
        assert event.reasons == expected["reasons"] and event.reasons
        assert event.model and event.data_source == "bokeh-sampledata stocks.csv.gz" and event.delayed is False


def test_a_symbol_that_cannot_be_fetched_is_a_warning_naming_why(run):
    _, recorder, _ = run
    (warning,) = [
        e for e in recorder.of_type("log.record")
        if e.level == "WARNING" and "XYZ" in e.message and e.step_name == "fetch_market_data"
    ]
    assert warning.fields["symbol"] == "XYZ" and warning.fields["stage"] == "qualify"
    assert "unknown symbol" in warning.fields["meaning"] and "code" in warning.fields


async def test_the_report_compares_with_the_previous_run(run, store):
    _, recorder, previous = run
    assert previous.asked == [(WORKFLOW_ID, "exec-wf-1")]
    report = recorder.artifact("report")
    text = (await store.read_bytes(report.uri)).decode()
    assert text.startswith("# Signals run `exec-wf-1`")
    assert "exec-previous" in text and "**IBM**: BUY →" in text
    assert "XYZ" in text  # the failed symbol is listed
    assert report.metadata["previous_execution_id"] == "exec-previous"


async def test_the_reports_first_lines_say_the_data_is_replayed_and_how_the_model_fared(run, store):
    _, recorder, _ = run
    lines = (await store.read_bytes(recorder.artifact("report").uri)).decode().splitlines()
    assert lines[2].startswith("> **Replayed sample data**: historical bars replayed from bokeh-sampledata stocks.csv.gz")
    assert "last bar 2013-03-01" in lines[2] and "not live market data" in lines[2]
    verdict = recorder.artifact("model").payload["verdict_text"]
    assert lines[4] == f"> **Model verdict**: {verdict}"


async def test_aapls_signal_is_the_same_alone_and_in_company(run, store):
    """Same sample data as of 2013-03-01: AAPL scored alone, with IBM (the module's run), and
    with MSFT, IBM and GOOG gets the same action, strength, probability and reasons."""
    _, with_ibm, _ = run
    signals = {"AAPL, IBM": signal_of(with_ibm, "AAPL")}
    for symbols, execution_id in ((["AAPL"], "exec-wf-alone"), (["AAPL", "MSFT", "IBM", "GOOG"], "exec-wf-four")):
        recorder = Recorder()
        resources = resources_with(await started_provider(), store, PreviousRun(None))
        outcome = await run_workflow(WORKFLOW, run_request(symbols, execution_id), resources, recorder)
        assert outcome.status == "succeeded", outcome.error
        signals[", ".join(symbols)] = signal_of(recorder, "AAPL")
    alone = signals["AAPL"]
    assert alone["as_of"] == "2013-03-01" and alone["prob_up"] is not None
    for company, signal in signals.items():
        assert signal == alone, company


def signal_of(recorder: Recorder, symbol: str) -> dict:
    """The symbol's signal as the signals artifact has it, and as the event carries it."""
    stored = next(s for s in recorder.artifact("signals").payload["signals"] if s["symbol"] == symbol)
    (event,) = [e for e in recorder.of_type("signal.generated") if e.symbol == symbol]
    assert (event.action, event.strength, event.reasons) == (stored["action"], stored["strength"], stored["reasons"])
    return stored


async def test_an_unreachable_artifacts_service_leaves_a_report_without_comparison(store):
    recorder = Recorder()
    previous = PreviousRun(PreviousSignalsUnavailable("artifacts service at http://x unreachable: ConnectError"))
    resources = resources_with(await started_provider(), store, previous)
    outcome = await run_workflow(WORKFLOW, run_request(["MSFT"], "exec-wf-2"), resources, recorder)
    assert outcome.status == "succeeded", outcome.error
    (warning,) = [e for e in recorder.of_type("log.record") if e.level == "WARNING"]
    assert warning.message.startswith("no previous run available")
    text = (await store.read_bytes(recorder.artifact("report").uri)).decode()
    assert "No previous run to compare with." in text


async def test_no_symbol_with_data_fails_the_fetch_step(store):
    recorder = Recorder()
    resources = resources_with(await started_provider(), store, PreviousRun(None))
    outcome = await run_workflow(WORKFLOW, run_request(["XYZ", "QQQ"], "exec-wf-3"), resources, recorder)
    assert outcome.status == "failed" and outcome.failed_step == "fetch_market_data"
    assert "no market data for any symbol" in outcome.error
    assert [(e.event_type, e.step_name) for e in recorder.events if e.topic == "ibflow.runs.events"] == [
        ("run.started", None),
        ("step.started", "fetch_market_data"),
        ("step.failed", "fetch_market_data"),
        *[("step.skipped", step) for step in STEPS[1:]],
        ("run.failed", None),
    ]
    skipped = recorder.of_type("step.skipped")
    assert {e.reason for e in skipped} == {outcome.error}
    [failed] = recorder.of_type("run.failed")
    assert [(f.item, f.step) for f in failed.failed_items] == [
        ("XYZ", "fetch_market_data"), ("QQQ", "fetch_market_data")
    ]
    (error,) = [e for e in recorder.of_type("log.record") if e.level == "ERROR"]
    assert error.fields["error_type"] == "NoMarketDataError"
    assert not recorder.of_type("signal.generated")


class BrokenProvider:
    """A provider with a bug (not a MarketDataError): the step fails, nothing is swallowed."""

    name = "broken"

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def qualify(self, symbols):
        return {s: Instrument(s, 1, "SMART", "USD", s, "broken") for s in symbols}

    async def daily_bars(self, instrument, *, days, end=None) -> BarSeries:
        raise KeyError("reqHistoricalData")

    def stream_quotes(self, instruments):
        raise NotImplementedError

    def health(self) -> ProviderHealth:
        return ProviderHealth("connected")


class HalfBrokenProvider(BrokenProvider):
    """IBM fetches, AAPL answers with an IBKR-style error code."""

    def __init__(self, sample: SampleFileProvider) -> None:
        self._sample = sample

    async def qualify(self, symbols):
        return await self._sample.qualify(symbols)

    async def daily_bars(self, instrument, *, days, end=None) -> BarSeries:
        if instrument.symbol == "AAPL":
            raise MarketDataError("AAPL", "historical data pacing violation", code=162)
        return await self._sample.daily_bars(instrument, days=days, end=end or datetime.date(2013, 3, 1))


async def test_a_provider_bug_fails_the_step_with_its_error(store):
    recorder = Recorder()
    resources = resources_with(BrokenProvider(), store, PreviousRun(None))
    outcome = await run_workflow(WORKFLOW, run_request(["IBM"], "exec-wf-4"), resources, recorder)
    assert outcome.status == "failed" and outcome.error == "step fetch_market_data failed: KeyError: 'reqHistoricalData'"


async def test_a_fetch_error_code_is_logged_and_the_run_goes_on_with_the_others_to_a_partial_end(store):
    recorder = Recorder()
    resources = resources_with(HalfBrokenProvider(await started_provider()), store, PreviousRun(None))
    outcome = await run_workflow(WORKFLOW, run_request(["AAPL", "IBM"], "exec-wf-5"), resources, recorder)
    assert outcome.status == "partial", outcome.error
    (warning,) = [e for e in recorder.of_type("log.record") if e.level == "WARNING" and e.step_name]
    assert warning.fields == {
        "symbol": "AAPL",
        "stage": "daily_bars",
        "code": 162,
        "meaning": "historical data pacing violation",
        "provider": "broken",
    }
    assert warning.message == "AAPL skipped: historical data pacing violation (code 162)"
    assert [s.symbol for s in recorder.of_type("signal.generated")] == ["IBM"]
    partial = json.loads(recorder.of_type("run.partial")[0].model_dump_json())
    assert partial["summary"]["failed_symbols"] == {"AAPL": "historical data pacing violation (code 162)"}
    assert partial["failed_items"] == [{
        "item": "AAPL", "step": "fetch_market_data", "reason": "historical data pacing violation (code 162)", "code": 162
    }]
    (run_warning,) = [e for e in recorder.of_type("log.record") if e.level == "WARNING" and e.step_name is None]
    assert run_warning.message.startswith("run partial: 1 failed item: AAPL (fetch_market_data)")


def test_the_signals_diff_artifact_is_the_diff_the_report_shows(run):
    """One answer to "what changed since the previous run": the artifact the API serves holds
    the same comparison the report was written from."""
    _, recorder, _ = run
    diff = SignalsDiff.model_validate(recorder.artifact("signals_diff").payload)
    report = recorder.artifact("report")
    assert diff.previous_available and diff.previous_execution_id == "exec-previous"
    assert report.metadata["previous_execution_id"] == diff.previous_execution_id
    assert [c.model_dump(by_alias=True) for c in diff.changed] == report.metadata["changed"]
    assert "AAPL" in diff.new and diff.dropped == []
    assert {"IBM"} == {c.symbol for c in diff.changed} | set(diff.unchanged)


async def test_a_run_without_a_previous_run_publishes_no_signals_diff(store):
    recorder = Recorder()
    resources = resources_with(await started_provider(), store, PreviousRun(None))
    await run_workflow(WORKFLOW, run_request(["AAPL"], "exec-wf-first"), resources, recorder)
    assert "signals_diff" not in {a.name for a in recorder.of_type("artifact.created")}
    assert "report" in {a.name for a in recorder.of_type("artifact.created")}
