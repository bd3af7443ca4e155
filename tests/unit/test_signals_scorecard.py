"""The scorecard: forward returns from the sample data's closes, hits, the summary a
reader can recompute from the listed signals, the curves, and the workflow around them."""

import csv
import datetime
import gzip
import math
from functools import cache

import pytest

from services.signals.market_data.sample_file import SampleFileProvider, sample_file_path
from services.signals.scorecard.scoring import Closes, StoredSignal, curves, forward_returns, is_hit, score
from services.signals.scorecard.stored_signals import signals_of
from services.signals.workflow.catalogue import WORKFLOWS
from services.signals.workflow.runner import RunResources, run_workflow
from shared.artifact_store import ArtifactStore
from shared.events import RunRequested
from shared.scorecard import HORIZONS, Scorecard

pytestmark = pytest.mark.unit

D = datetime.date
SCORECARD_WORKFLOW = "ibkr_trading_signal_workflow.scorecard"


@cache
def sample_closes(symbol: str) -> Closes:
    """The `close` column of the sample file, read here without the code under test."""
    with gzip.open(sample_file_path(), "rt", newline="") as rows:
        found = sorted((D.fromisoformat(r["Date"]), float(r["Close"])) for r in csv.DictReader(rows)
                       if r["Ticker"] == symbol)
    return Closes(dates=tuple(d for d, _ in found), closes=tuple(c for _, c in found))


def signal(symbol: str, as_of: D, action: str, execution_id: str | None = None, published_at: str = "") -> StoredSignal:
    return StoredSignal(execution_id or f"backfill-wf-{as_of:%Y%m%d}", symbol, as_of, action, 0.5, None,
                        published_at or as_of.isoformat())


def close_on(symbol: str, day: D) -> float:
    closes = sample_closes(symbol)
    return closes.closes[closes.dates.index(day)]


def test_the_5_day_return_of_aapl_as_of_2012_06_01_is_the_closes_ratio():
    returns = forward_returns(sample_closes("AAPL"), D(2012, 6, 1), HORIZONS)
    assert math.isclose(returns[5], close_on("AAPL", D(2012, 6, 8)) / close_on("AAPL", D(2012, 6, 1)) - 1,
                        abs_tol=1e-9)
    assert math.isclose(returns[1], close_on("AAPL", D(2012, 6, 4)) / close_on("AAPL", D(2012, 6, 1)) - 1,
                        abs_tol=1e-9)
    # 20 sessions on: 4 July is no session
    assert math.isclose(returns[20], close_on("AAPL", D(2012, 6, 29)) / close_on("AAPL", D(2012, 6, 1)) - 1,
                        abs_tol=1e-9)


def test_a_return_whose_bar_does_not_exist_yet_is_null():
    last = sample_closes("IBM").dates[-1]  # 2013-03-01, the replay's today
    returns = forward_returns(sample_closes("IBM"), D(2013, 2, 22), HORIZONS)
    assert returns[1] is not None and returns[5] is not None and returns[20] is None
    assert forward_returns(sample_closes("IBM"), last, HORIZONS) == {1: None, 5: None, 20: None}


@pytest.mark.parametrize(
    ("action", "forward", "hit"),
    [("BUY", 0.01, True), ("BUY", -0.01, False), ("BUY", 0.0, False), ("SELL", -0.01, True),
     ("SELL", 0.01, False), ("HOLD", 0.05, None), ("BUY", None, None)],
)
def test_a_hit_is_a_buy_then_a_rise_or_a_sell_then_a_fall(action, forward, hit):
    assert is_hit(action, forward) is hit


def summer_signals() -> list[StoredSignal]:
    days = [d for d in (D(2012, 6, 1) + datetime.timedelta(days=n) for n in range(92)) if d in sample_closes("IBM").dates]
    actions = ("BUY", "SELL", "HOLD", "BUY", "BUY")
    return [signal(symbol, day, actions[(n + i) % len(actions)])
            for n, day in enumerate(days) for i, symbol in enumerate(("AAPL", "MSFT", "IBM", "GOOG"))]


def test_the_summary_adds_up_from_the_listed_signals():
    closes = {s: sample_closes(s) for s in ("AAPL", "MSFT", "IBM", "GOOG")}
    scores = score(summer_signals(), closes, HORIZONS)
    assert len(scores.signals) == 65 * 4
    for row in scores.summary:
        listed = [s for s in scores.signals if (s.symbol, s.action) == (row.symbol, row.action)]
        known = [s.forward_returns[str(row.horizon)] for s in listed if s.forward_returns[str(row.horizon)] is not None]
        assert (row.count, row.pending) == (len(known), len(listed) - len(known))
        assert math.isclose(row.mean_return, sum(known) / len(known), abs_tol=1e-9)
        if row.action == "HOLD":
            assert row.hit_rate is None and row.mean_signed_return is None
            continue
        hits = [r > 0 if row.action == "BUY" else r < 0 for r in known]
        assert math.isclose(row.hit_rate, sum(hits) / len(hits), abs_tol=1e-9)
        sign = 1 if row.action == "BUY" else -1
        assert math.isclose(row.mean_signed_return, sum(sign * r for r in known) / len(known), abs_tol=1e-9)
    assert {(r.symbol, r.action) for r in scores.summary} == {(s.symbol, s.action) for s in scores.signals}
    assert scores.not_yet_scorable == 0  # the data goes on to 2013


def test_one_signal_per_symbol_and_session_the_latest_published():
    earlier = signal("AAPL", D(2012, 6, 1), "BUY", "manual-1", "2026-12-01T10:00:00Z")
    later = signal("AAPL", D(2012, 6, 1), "SELL", "backfill-wf-20120601", "2026-12-02T10:00:00Z")
    scores = score([later, earlier], {"AAPL": sample_closes("AAPL")}, HORIZONS)
    assert [(s.execution_id, s.action) for s in scores.signals] == [("backfill-wf-20120601", "SELL")]
    assert scores.duplicates_ignored == 1


def test_signals_of_symbols_without_prices_are_left_out():
    scores = score([signal("AAPL", D(2012, 6, 1), "BUY"), signal("XYZ", D(2012, 6, 1), "BUY")],
                   {"AAPL": sample_closes("AAPL")}, HORIZONS)
    assert [s.symbol for s in scores.signals] == ["AAPL"]


def test_the_curves_follow_each_signal_to_the_next_close_and_compare_with_buy_and_hold():
    days = tuple(D(2020, 1, d) for d in (6, 7, 8, 9, 10))
    closes = {"X": Closes(days, (100.0, 110.0, 99.0, 99.0, 108.9)), "Y": Closes(days, (10.0, 10.0, 10.0, 10.0, 10.0))}
    kept = [signal("X", days[0], "BUY"), signal("X", days[1], "SELL"), signal("X", days[2], "HOLD"),
            signal("Y", days[0], "BUY")]
    x, y, both = curves(kept, closes, hold=2)
    assert x.symbol == "X" and [p.date for p in x.points] == [d.isoformat() for d in days]
    follow = [p.signals for p in x.points]
    hold = [p.buy_and_hold for p in x.points]
    # long +10%, short a 10% fall (+10%), flat, flat (the HOLD, then nothing newer than the longest horizon)
    assert follow == pytest.approx([0.0, 0.1, 0.21, 0.21, 0.21])
    assert hold == pytest.approx([0.0, 0.1, -0.01, -0.01, 0.089])
    assert [p.signals for p in y.points] == pytest.approx([0.0, 0.0, 0.0])  # held 2 sessions, then flat
    assert both.symbol == "ALL" and both.points[1].signals == pytest.approx(0.05)


def test_stored_signals_are_read_leniently():
    artifact = {"execution_id": "e1", "created_at": "2026-12-01T00:00:00Z"}
    payload = {"signals": [
        {"symbol": "AAPL", "action": "BUY", "as_of": "2012-06-01", "strength": 0.7, "last_price": 560.99},
        {"symbol": "MSFT", "action": "MAYBE", "as_of": "2012-06-01"},
        {"symbol": "IBM", "action": "SELL", "as_of": "June"},
        {"symbol": "GOOG", "action": "HOLD"},
        "not a row",
    ]}
    assert signals_of(artifact, payload) == [
        StoredSignal("e1", "AAPL", D(2012, 6, 1), "BUY", 0.7, 560.99, "2026-12-01T00:00:00Z")]
    assert signals_of(artifact, ["not", "an", "object"]) == []


class Recorder:
    def __init__(self) -> None:
        self.events = []

    async def __call__(self, event) -> None:
        self.events.append(event)

    def artifact(self, name: str):
        return next(e for e in self.events if e.event_type == "artifact.created" and e.name == name)


async def no_previous_run(**_):
    return None


def stored(signals):
    async def lookup(*, workflow_id: str):
        assert workflow_id == "ibkr_trading_signal_workflow"
        return signals, len({s.execution_id for s in signals})

    return lookup


async def run_scorecard(tmp_path, signals):
    provider = SampleFileProvider()
    await provider.start()
    resources = RunResources(
        provider=provider, store=ArtifactStore.from_url(tmp_path.as_uri()), watchlist=("AAPL",),
        history_days=3 * 365, step_timeout_seconds=60, inline_max_bytes=64 * 1024,
        previous_signals=no_previous_run, stored_signals=stored(signals),
    )
    recorder = Recorder()
    request = RunRequested(workflow_id=SCORECARD_WORKFLOW, execution_id="scorecard-test", trigger="manual")
    return await run_workflow(WORKFLOWS[SCORECARD_WORKFLOW], request, resources, recorder), recorder


async def test_the_scorecard_workflow_publishes_the_contracts_shape_with_its_labels(tmp_path):
    outcome, recorder = await run_scorecard(tmp_path, summer_signals())
    assert outcome.status == "succeeded", outcome.error
    artifact = recorder.artifact("scorecard")
    assert (artifact.kind, artifact.step_name, artifact.uri) == ("scorecard", "publish_scorecard", None)
    payload = artifact.payload
    scorecard = Scorecard.model_validate({k: v for k, v in payload.items() if k != "unpriced_symbols"})
    assert scorecard.horizons == [1, 5, 20]
    assert (scorecard.first_as_of, scorecard.last_as_of, scorecard.prices_until) == (
        "2012-06-01", "2012-08-31", "2013-03-01")
    assert scorecard.labels.replayed and "replayed historical sample data" in scorecard.labels.data
    assert "costs" in scorecard.labels.costs and "slippage" in scorecard.labels.costs
    [aapl] = [s for s in payload["signals"] if (s["symbol"], s["as_of"]) == ("AAPL", "2012-06-01")]
    assert math.isclose(aapl["forward_returns"]["5"],
                        close_on("AAPL", D(2012, 6, 8)) / close_on("AAPL", D(2012, 6, 1)) - 1, abs_tol=1e-9)
    assert {c.symbol for c in scorecard.curves} == {"AAPL", "GOOG", "IBM", "MSFT", "ALL"}
    summary = recorder.artifact("scorecard_summary")
    assert summary.metadata["renderer"] == "table" and len(summary.payload["rows"]) == len(scorecard.summary)


async def test_unknown_symbols_make_the_scorecard_partial(tmp_path):
    outcome, recorder = await run_scorecard(
        tmp_path, [signal("AAPL", D(2012, 6, 1), "BUY"), signal("TSLA", D(2012, 6, 1), "SELL")])
    assert outcome.status == "partial"
    assert [f.item for f in outcome.failed_items] == ["TSLA"]
    assert recorder.artifact("scorecard").payload["unpriced_symbols"].keys() == {"TSLA"}


async def test_nothing_to_score_fails_the_run_saying_what_to_do(tmp_path):
    outcome, _ = await run_scorecard(tmp_path, [])
    assert outcome.status == "failed"
    assert "has published no signal yet: run it, or backfill it, first" in outcome.error


async def test_the_reader_pages_through_the_artifacts_api_and_reads_stored_content_too():
    import httpx

    from services.signals.scorecard.stored_signals import ArtifactsApiStoredSignals, StoredSignalsUnavailable

    rows = {"a1": {"signals": [{"symbol": "AAPL", "action": "BUY", "as_of": "2012-06-01"}]},
            "a2": {"signals": [{"symbol": "IBM", "action": "SELL", "as_of": "2012-06-04"}]}}

    def answer(request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        if path == "/api/artifacts/":
            assert (params["workflow_id"], params["kind"]) == ("wf", "signals")
            page = {"artifacts": [{"artifact_id": "a2", "execution_id": "e2", "created_at": "t2"}], "next_cursor": None}
            if "cursor" not in params:
                page = {"artifacts": [{"artifact_id": "a1", "execution_id": "e1", "created_at": "t1"}], "next_cursor": "c"}
            return httpx.Response(200, json=page)
        if path == "/api/artifacts/a1":
            return httpx.Response(200, json={"artifact_id": "a1", "payload": rows["a1"]})
        if path == "/api/artifacts/a2":
            return httpx.Response(200, json={"artifact_id": "a2", "payload": None})
        if path == "/api/artifacts/a2/content":
            return httpx.Response(200, json=rows["a2"])
        return httpx.Response(404, json={"error": "no"})

    reader = ArtifactsApiStoredSignals("http://artifacts", timeout=1, transport=httpx.MockTransport(answer))
    signals, artifacts = await reader(workflow_id="wf")
    assert artifacts == 2
    assert [(s.execution_id, s.symbol, s.action) for s in signals] == [("e1", "AAPL", "BUY"), ("e2", "IBM", "SELL")]

    broken = ArtifactsApiStoredSignals("http://artifacts", timeout=1,
                                       transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    with pytest.raises(StoredSignalsUnavailable, match="GET /api/artifacts/ answered 503"):
        await broken(workflow_id="wf")
