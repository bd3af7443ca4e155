"""Walk-forward: never trains on the period it predicts; labels, metrics, determinism."""

import io

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from services.signals.analytics.features import MODEL_FEATURES, compute_features
from services.signals.analytics.model import WalkForwardResult, default_estimator, serialize_model, walk_forward

pytestmark = pytest.mark.unit

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")


def random_walk_bars(seed: int, n: int = 260, *, momentum: float = 0.0) -> pd.DataFrame:
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
    return walk_forward(features, bars, n_folds=4, min_train_rows=200)


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
    assert len(result.folds) == 4
    previous_end = None
    for fold in result.folds:
        assert fold["train_end"] < fold["test_start"]
        assert fold["train_label_end"] < fold["test_start"]
        assert fold["test_start"] <= fold["test_end"]
        if previous_end is not None:
            assert fold["test_start"] > previous_end
        previous_end = fold["test_end"]


def test_instrumented_fit_never_sees_the_prediction_period(data):
    features, bars = data
    calls: list = []
    result = walk_forward(
        features, bars, n_folds=4, min_train_rows=200, make_estimator=lambda: RecordingEstimator(calls)
    )
    kinds = [kind for kind, _ in calls]
    # one fit and one predict per fold, then the final fit; latest_probabilities predicts later
    assert kinds == ["fit", "predict"] * 4 + ["fit"]
    for fold_number in range(4):
        (_, trained), (_, predicted) = calls[2 * fold_number], calls[2 * fold_number + 1]
        first_predicted = predicted.get_level_values("date").min()
        assert trained.get_level_values("date").max() < first_predicted
        assert next_bar_dates(bars, trained).max() < first_predicted
        assert first_predicted == pd.Timestamp(result.folds[fold_number]["test_start"])
        assert set(trained).isdisjoint(set(predicted))

    _, final_rows = calls[-1]
    last_labelled = {s: b.index[-2] for s, b in bars.items()}
    assert final_rows.get_level_values("date").max() == max(last_labelled.values())
    assert not any(date == bars[s].index[-1] for s, date in final_rows), "the unlabelled last bar was trained on"


def test_changing_the_future_does_not_change_past_predictions(data, result):
    features, bars = data
    cut = bars["AAA"].index[200]
    rng = np.random.default_rng(99)
    changed_bars = {}
    for symbol, frame in bars.items():
        frame = frame.copy()
        later = frame.index >= cut
        frame.loc[later, ["open", "high", "low", "close"]] *= rng.uniform(0.7, 1.3, (later.sum(), 1))
        changed_bars[symbol] = frame
    changed = walk_forward(
        {s: compute_features(b) for s, b in changed_bars.items()}, changed_bars, n_folds=4, min_train_rows=200
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
    first_test = pd.Timestamp(result.folds[0]["test_start"])
    assert predictions.index.get_level_values("date").min() == first_test
    for symbol in SYMBOLS:
        rows = predictions.xs(symbol, level="symbol")
        close = bars[symbol]["close"]
        expected_up = (close.shift(-1) > close).reindex(rows.index)
        assert (rows["actual_up"] == expected_up).all()
        f = features[symbol].reindex(rows.index)
        assert (rows["baseline_up"] == (f["sma_20"] > f["sma_50"])).all()
        assert bars[symbol].index[-1] not in rows.index
    assert ((predictions["prob_up"] >= 0) & (predictions["prob_up"] <= 1)).all()
    assert (predictions["predicted_up"] == (predictions["prob_up"] >= 0.5)).all()


def test_metrics_match_the_predictions(result):
    p = result.predictions
    m = result.metrics
    assert m["n_predictions"] == len(p)
    assert m["accuracy"] == pytest.approx((p["predicted_up"] == p["actual_up"]).mean())
    assert m["precision"] == pytest.approx(p.loc[p["predicted_up"], "actual_up"].mean())
    decisive = (p["prob_up"] - 0.5).abs() >= 0.05
    assert m["hit_rate"] == pytest.approx((p.loc[decisive, "predicted_up"] == p.loc[decisive, "actual_up"]).mean())
    assert m["baseline_accuracy"] == pytest.approx((p["baseline_up"] == p["actual_up"]).mean())
    assert sum(f["n"] for f in result.folds) == len(p)
    for fold in result.folds:
        rows = p[p["fold"] == fold["fold"]]
        assert fold["accuracy"] == pytest.approx((rows["predicted_up"] == rows["actual_up"]).mean())


def test_model_description(result, data):
    features, bars = data
    assert result.feature_names == list(MODEL_FEATURES)
    assert "LogisticRegression" in result.model_type
    assert result.params["C"] == 1.0 and result.params["random_state"] == 0
    window = result.training_window
    assert window["end"] == max(b.index[-2] for b in bars.values()).date().isoformat()
    assert window["rows"] == sum(len(b) - 50 for b in bars.values())  # 49 warm-up bars + the unlabelled last bar
    assert set(result.coefficients) == set(MODEL_FEATURES)
    summary = result.summary()
    assert summary["metrics"] == result.metrics and summary["folds"] == result.folds


def test_latest_probabilities_score_the_unlabelled_last_bar(result, data):
    features, bars = data
    latest = result.latest_probabilities()
    assert set(latest) == set(SYMBOLS)
    for symbol, prob in latest.items():
        row = features[symbol].iloc[[-1]][list(MODEL_FEATURES)]
        expected = result.model.predict_proba(row.set_axis(pd.Index([symbol])))[0, 1]
        assert prob == pytest.approx(expected)
    assert result.latest_dates() == {s: b.index[-1].date().isoformat() for s, b in bars.items()}


def test_deterministic(data, result):
    features, bars = data
    again = walk_forward(features, bars, n_folds=4, min_train_rows=200)
    pd.testing.assert_frame_equal(again.predictions, result.predictions)
    assert again.latest_probabilities() == result.latest_probabilities()


def test_learns_a_real_pattern():
    """With strongly autocorrelated returns the model beats a coin flip out of sample."""
    features, bars = universe(momentum=0.6)
    result = walk_forward(features, bars, n_folds=3, min_train_rows=200)
    assert result.metrics["accuracy"] > 0.6
    assert result.coefficients["ret_1d"] > 0


def test_serialized_model_round_trips(result, data):
    features, _ = data
    loaded = joblib.load(io.BytesIO(serialize_model(result)))
    assert loaded["feature_names"] == result.feature_names
    X = features["AAA"].iloc[-30:][loaded["feature_names"]]
    np.testing.assert_allclose(loaded["estimator"].predict_proba(X), result.model.predict_proba(X))


def test_not_enough_history_is_a_clear_error():
    features, bars = universe(n=60)
    with pytest.raises(ValueError, match="not enough history"):
        walk_forward(features, bars, min_train_rows=120)
