"""Per-symbol walk-forward: never trains on the period it predicts, never on another
symbol; labels, metrics, verdicts, determinism."""

import io

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from services.signals.analytics.features import MODEL_FEATURES, compute_features
from services.signals.analytics.model import (
    NotEnoughHistory,
    WalkForwardResult,
    default_estimator,
    serialize_model,
    verdict,
    walk_forward,
)

pytestmark = pytest.mark.unit

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
BARS = 360
MIN_TRAIN_ROWS = 150  # of each symbol's 310 labelled days: 160 days out of sample per symbol
FOLDS = 4


def random_walk_bars(seed: int, n: int = BARS, *, momentum: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, 0.015, n)
    returns = np.empty(n)
    returns[0] = shocks[0]
    for i in range(1, n):
        returns[i] = momentum * returns[i - 1] + shocks[i]
    close = 50.0 * (1 + seed) * np.exp(np.cumsum(returns))
    index = pd.DatetimeIndex(pd.bdate_range("2023-01-02", periods=n), name="date")
    return pd.DataFrame(
        {
            "open": close * (1 + rng.normal(0, 0.002, n)),
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": 1e6 * (1 + rng.random(n)),
        },
        index=index,
    )


def universe(**kwargs) -> tuple[dict, dict]:
    bars = {s: random_walk_bars(i, **kwargs) for i, s in enumerate(SYMBOLS)}
    return {s: compute_features(b) for s, b in bars.items()}, bars


@pytest.fixture(scope="module")
def data():
    return universe()


@pytest.fixture(scope="module")
def result(data) -> WalkForwardResult:
    features, bars = data
    return walk_forward(features, bars, n_folds=FOLDS, min_train_rows=MIN_TRAIN_ROWS)


def folds_of(result: WalkForwardResult, symbol: str) -> list[dict]:
    return [f for f in result.folds if f["symbol"] == symbol]


class RecordingEstimator(BaseEstimator, ClassifierMixin):
    """The default pipeline, noting which (symbol, date) rows each fit and predict saw."""

    def __init__(self, calls: list[tuple[str, pd.MultiIndex]]):
        self.calls = calls
        self.inner = default_estimator()

    def fit(self, X, y):
        self.calls.append(("fit", X.index))
        self.inner.fit(X, y)
        self.classes_ = self.inner.classes_
        return self

    def predict_proba(self, X):
        self.calls.append(("predict", X.index))
        return self.inner.predict_proba(X)


def next_bar_dates(bars: dict[str, pd.DataFrame], rows: pd.MultiIndex) -> pd.Series:
    """The date each row's label is known: the symbol's next bar."""
    out = []
    for symbol, date in rows:
        index = bars[symbol].index
        out.append(index[index.get_loc(date) + 1])
    return pd.Series(out)


def test_folds_train_strictly_before_their_test_window(result):
    assert [f["symbol"] for f in result.folds] == [s for s in SYMBOLS for _ in range(FOLDS)]
    for symbol in SYMBOLS:
        previous_end = None
        for fold in folds_of(result, symbol):
            assert fold["train_end"] < fold["test_start"]
            assert fold["train_label_end"] < fold["test_start"]
            assert fold["test_start"] <= fold["test_end"]
            if previous_end is not None:
                assert fold["test_start"] > previous_end
            previous_end = fold["test_end"]


def test_instrumented_fit_never_sees_the_prediction_period_nor_another_symbol(data):
    features, bars = data
    calls: list = []
    result = walk_forward(
        features, bars, n_folds=FOLDS, min_train_rows=MIN_TRAIN_ROWS, make_estimator=lambda: RecordingEstimator(calls)
    )
    per_symbol = 2 * FOLDS + 1
    # per symbol: one fit and one predict per fold, then the final fit; latest_probabilities predicts later
    assert [kind for kind, _ in calls] == (["fit", "predict"] * FOLDS + ["fit"]) * len(SYMBOLS)
    for number, symbol in enumerate(SYMBOLS):
        own = calls[number * per_symbol : (number + 1) * per_symbol]
        assert all(set(rows.get_level_values("symbol")) == {symbol} for _, rows in own)
        for fold_number in range(FOLDS):
            (_, trained), (_, predicted) = own[2 * fold_number], own[2 * fold_number + 1]
            first_predicted = predicted.get_level_values("date").min()
            assert trained.get_level_values("date").max() < first_predicted
            assert next_bar_dates(bars, trained).max() < first_predicted
            assert first_predicted == pd.Timestamp(folds_of(result, symbol)[fold_number]["test_start"])
            assert set(trained).isdisjoint(set(predicted))

        _, final_rows = own[-1]
        assert final_rows.get_level_values("date").max() == bars[symbol].index[-2]
        assert bars[symbol].index[-1] not in final_rows.get_level_values("date"), "the unlabelled last bar was trained on"


def test_changing_the_future_does_not_change_past_predictions(data, result):
    features, bars = data
    cut = bars["AAA"].index[250]
    rng = np.random.default_rng(99)
    changed_bars = {}
    for symbol, frame in bars.items():
        frame = frame.copy()
        later = frame.index >= cut
        frame.loc[later, ["open", "high", "low", "close"]] *= rng.uniform(0.7, 1.3, (later.sum(), 1))
        changed_bars[symbol] = frame
    changed = walk_forward(
        {s: compute_features(b) for s, b in changed_bars.items()},
        changed_bars,
        n_folds=FOLDS,
        min_train_rows=MIN_TRAIN_ROWS,
    )
    before = result.predictions.index.get_level_values("date") < cut
    assert before.sum() > 50
    pd.testing.assert_series_equal(result.predictions.loc[before, "prob_up"], changed.predictions.loc[before, "prob_up"])
    # the test has teeth: later predictions do move
    assert not np.allclose(result.predictions.loc[~before, "prob_up"], changed.predictions.loc[~before, "prob_up"])


def test_predictions_are_out_of_sample_with_correct_labels(data, result):
    features, bars = data
    predictions = result.predictions
    assert list(predictions.columns[:4]) == ["prob_up", "predicted_up", "actual_up", "baseline_up"]
    assert predictions.index.names == ["symbol", "date"]
    assert not predictions.index.has_duplicates
    for symbol in SYMBOLS:
        rows = predictions.xs(symbol, level="symbol")
        assert rows.index.min() == pd.Timestamp(folds_of(result, symbol)[0]["test_start"])
        close = bars[symbol]["close"]
        expected_up = (close.shift(-1) > close).reindex(rows.index)
        assert (rows["actual_up"] == expected_up).all()
        f = features[symbol].reindex(rows.index)
        assert (rows["baseline_up"] == (f["sma_20"] > f["sma_50"])).all()
        assert bars[symbol].index[-1] not in rows.index
    assert ((predictions["prob_up"] >= 0) & (predictions["prob_up"] <= 1)).all()
    assert (predictions["predicted_up"] == (predictions["prob_up"] >= 0.5)).all()


def accuracy_of(rows: pd.DataFrame) -> float:
    return (rows["predicted_up"] == rows["actual_up"]).mean()


def test_metrics_match_the_predictions(result):
    p = result.predictions
    m = result.metrics
    assert m["n_predictions"] == len(p)
    assert m["accuracy"] == pytest.approx(accuracy_of(p))
    assert m["precision"] == pytest.approx(p.loc[p["predicted_up"], "actual_up"].mean())
    decisive = (p["prob_up"] - 0.5).abs() >= 0.05
    assert m["hit_rate"] == pytest.approx((p.loc[decisive, "predicted_up"] == p.loc[decisive, "actual_up"]).mean())
    assert m["baseline_accuracy"] == pytest.approx((p["baseline_up"] == p["actual_up"]).mean())
    assert m["up_rate"] == pytest.approx(p["actual_up"].mean())
    assert m["n_folds"] == len(result.folds) == FOLDS * len(SYMBOLS)
    assert sum(f["n"] for f in result.folds) == len(p)
    for fold in result.folds:
        rows = p.xs(fold["symbol"], level="symbol")
        assert fold["accuracy"] == pytest.approx(accuracy_of(rows[rows["fold"] == fold["fold"]]))


def test_each_symbol_has_its_own_metrics_and_verdict(result):
    for symbol in SYMBOLS:
        rows = result.predictions.xs(symbol, level="symbol")
        own = result.per_symbol[symbol]
        assert own["n_predictions"] == len(rows)
        assert own["accuracy"] == pytest.approx(accuracy_of(rows))
        assert own["baseline_accuracy"] == pytest.approx((rows["baseline_up"] == rows["actual_up"]).mean())
        assert own["up_rate"] == pytest.approx(rows["actual_up"].mean())
        assert own["verdict"] in ("better", "no_better", "worse")
        assert own["verdict_text"].startswith(f"{symbol}'s model did ")
    assert result.metrics["verdict_text"].startswith("The model did ")


def test_model_description(result, data):
    features, bars = data
    assert result.feature_names == list(MODEL_FEATURES)
    assert "LogisticRegression" in result.model_type
    assert result.params["C"] == 1.0 and result.params["random_state"] == 0
    assert "one model per symbol" in result.params["scope"]
    window = result.training_window
    assert window["end"] == max(b.index[-2] for b in bars.values()).date().isoformat()
    assert window["rows"] == sum(len(b) - 50 for b in bars.values())  # 49 warm-up bars + the unlabelled last bar
    assert set(result.coefficients) == set(SYMBOLS)
    assert all(set(c) == set(MODEL_FEATURES) for c in result.coefficients.values())
    summary = result.summary()
    assert list(summary)[:2] == ["verdict", "verdict_text"]
    assert summary["verdict"] == result.metrics["verdict"]
    assert summary["metrics"] == result.metrics and summary["folds"] == result.folds
    assert [row["symbol"] for row in summary["per_symbol"]] == list(SYMBOLS)
    assert all(not isinstance(v, (dict, list)) for row in summary["per_symbol"] for v in row.values())
    assert summary["unscored"] == {}


def test_latest_probabilities_score_the_unlabelled_last_bar_with_the_symbols_own_model(result, data):
    features, bars = data
    latest = result.latest_probabilities()
    assert set(latest) == set(SYMBOLS)
    for symbol, prob in latest.items():
        row = features[symbol].iloc[[-1]][list(MODEL_FEATURES)]
        expected = result.models[symbol].predict_proba(row.set_axis(pd.Index([symbol])))[0, 1]
        assert prob == pytest.approx(expected)
    assert len(set(latest.values())) == len(SYMBOLS)
    assert result.latest_dates() == {s: b.index[-1].date().isoformat() for s, b in bars.items()}


def test_a_symbols_model_does_not_depend_on_the_other_symbols(data, result):
    features, bars = data
    for symbol in ("AAA", "CCC"):
        alone = walk_forward(
            {symbol: features[symbol]}, {symbol: bars[symbol]}, n_folds=FOLDS, min_train_rows=MIN_TRAIN_ROWS
        )
        assert alone.latest_probabilities()[symbol] == result.latest_probabilities()[symbol]
        in_company = result.predictions.xs(symbol, level="symbol", drop_level=False)
        pd.testing.assert_frame_equal(alone.predictions, in_company)
        assert alone.per_symbol[symbol] == result.per_symbol[symbol]
        assert alone.folds == folds_of(result, symbol)


def test_deterministic(data, result):
    features, bars = data
    again = walk_forward(features, bars, n_folds=FOLDS, min_train_rows=MIN_TRAIN_ROWS)
    pd.testing.assert_frame_equal(again.predictions, result.predictions)
    assert again.latest_probabilities() == result.latest_probabilities()


def test_learns_a_real_pattern_and_says_it_beats_its_baselines():
    """With strongly autocorrelated returns each model beats a coin flip and its baselines out of sample."""
    features, bars = universe(momentum=0.6)
    result = walk_forward(features, bars, n_folds=3, min_train_rows=MIN_TRAIN_ROWS)
    assert result.metrics["accuracy"] > 0.6
    assert result.metrics["verdict"] == "better"
    assert result.metrics["verdict_text"].startswith("The model did better than its baselines out of sample")
    for symbol in SYMBOLS:
        assert result.coefficients[symbol]["ret_1d"] > 0


def test_serialized_model_round_trips(result, data):
    features, _ = data
    loaded = joblib.load(io.BytesIO(serialize_model(result)))
    assert loaded["feature_names"] == result.feature_names
    assert set(loaded["estimators"]) == set(SYMBOLS) and "per symbol" in loaded["scope"]
    X = features["AAA"].iloc[-30:][loaded["feature_names"]]
    np.testing.assert_allclose(loaded["estimators"]["AAA"].predict_proba(X), result.models["AAA"].predict_proba(X))


def test_a_symbol_without_enough_history_is_unscored_with_the_reason(data):
    features, bars = data
    young = random_walk_bars(7, n=120)
    result = walk_forward(
        {**features, "NEW": compute_features(young)},
        {**bars, "NEW": young},
        n_folds=FOLDS,
        min_train_rows=MIN_TRAIN_ROWS,
    )
    assert set(result.models) == set(SYMBOLS)
    assert "NEW" not in result.latest_probabilities()
    assert result.unscored["NEW"].startswith("not enough history to score")
    assert "120 bars give 70 labelled days" in result.unscored["NEW"]


def test_not_enough_history_anywhere_is_a_clear_error():
    features, bars = universe(n=60)
    with pytest.raises(NotEnoughHistory, match="AAA: not enough history") as raised:
        walk_forward(features, bars, min_train_rows=120)
    assert isinstance(raised.value, ValueError)


# --- verdicts --------------------------------------------------------------------------


def test_worse_than_a_baseline_is_said_plainly():
    judged = verdict({"accuracy": 0.489, "baseline_accuracy": 0.513, "up_rate": 0.48, "n_predictions": 2340})
    assert judged == {
        "verdict": "worse",
        "verdict_text": "The model did worse than the moving-average baseline out of sample (48.9% vs 51.3%): "
        "treat its signals as no better than chance.",
    }
    both = verdict(
        {"accuracy": 0.489, "baseline_accuracy": 0.513, "up_rate": 0.515, "n_predictions": 2340}, "AAPL's model"
    )
    assert both["verdict_text"] == (
        "AAPL's model did worse than the moving-average baseline and the always-up rule out of sample "
        "(48.9% vs 51.3% and 51.5%): treat its signals as no better than chance."
    )


def test_better_only_beyond_the_noise():
    better = verdict({"accuracy": 0.60, "baseline_accuracy": 0.52, "up_rate": 0.53, "n_predictions": 1000})
    assert better == {
        "verdict": "better",
        "verdict_text": "The model did better than its baselines out of sample (60.0% vs 52.0% for the moving-average "
        "baseline and 53.0% for the always-up rule, over 1000 predictions).",
    }
    # 2 points over 200 days: inside two standard errors (about 7 points)
    level = verdict({"accuracy": 0.55, "baseline_accuracy": 0.53, "up_rate": 0.52, "n_predictions": 200})
    assert level["verdict"] == "no_better"
    assert level["verdict_text"].startswith("The model did not clearly beat the moving-average baseline out of sample")
    assert level["verdict_text"].endswith("treat its signals as no better than chance.")


def test_no_predictions_is_untested():
    assert verdict({"accuracy": None, "n_predictions": 0})["verdict"] == "untested"
