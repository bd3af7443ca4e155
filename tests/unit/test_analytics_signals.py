"""Actions, strengths and reasons from the model probability, the trend and RSI."""

import numpy as np
import pandas as pd
import pytest

from services.signals.analytics.features import MODEL_FEATURES, compute_features
from services.signals.analytics.model import WalkForwardResult
from services.signals.analytics.signals import Signal, decide_signals, signals_payload

pytestmark = pytest.mark.unit


class FixedProbability:
    """Stands in for the fitted model: P(up) per symbol, in latest_features' row order."""

    classes_ = np.array([0, 1])

    def __init__(self, by_symbol: dict[str, float]):
        self.by_symbol = by_symbol

    def predict_proba(self, X):
        up = np.array([self.by_symbol[s] for s in X.index])
        return np.column_stack([1 - up, up])


def bars_from_changes(changes: list[float], start: float = 100.0) -> pd.DataFrame:
    close = start + np.concatenate([[0.0], np.cumsum(changes)])
    index = pd.DatetimeIndex(pd.bdate_range("2024-01-01", periods=len(close)), name="date")
    return pd.DataFrame(
        {"open": close, "high": close + 0.5, "low": close - 0.5, "close": close, "volume": 1e6}, index=index
    )


# +2/-1.5 zigzag: rising (20-day above 50-day) with RSI about 57
UPTREND = bars_from_changes([2.0, -1.5] * 50)
DOWNTREND = bars_from_changes([-2.0, 1.5] * 50, start=200.0)
RISING = bars_from_changes([1.0] * 100)  # RSI 100


def result_for(
    probabilities: dict[str, float], features: dict[str, pd.DataFrame], metrics=None, unscored=None
) -> WalkForwardResult:
    latest = pd.DataFrame(
        {name: [features[s][name].iloc[-1] for s in probabilities] for name in MODEL_FEATURES},
        index=list(probabilities),
    )
    latest.insert(0, "date", [features[s].index[-1] for s in probabilities])
    return WalkForwardResult(
        model_type="fixed", params={}, feature_names=list(MODEL_FEATURES), training_window={}, folds=[],
        metrics={}, predictions=pd.DataFrame(), models={s: FixedProbability(probabilities) for s in probabilities},
        latest_features=latest, per_symbol={s: metrics or {"accuracy": 0.55} for s in probabilities},
        unscored=unscored or {},
    )


def decide(bars: dict[str, pd.DataFrame], probabilities: dict[str, float], **kwargs) -> dict[str, Signal]:
    features = {s: compute_features(b) for s, b in bars.items()}
    signals = decide_signals(result_for(probabilities, features, **kwargs), features, bars)
    return {s.symbol: s for s in signals}


def test_model_and_uptrend_agree_buy():
    signal = decide({"UP": UPTREND}, {"UP": 0.63})["UP"]
    assert signal.action == "BUY"
    # 0.6 * (0.13 / 0.15) + 0.25 * 1 + 0.15 * 0
    assert signal.strength == pytest.approx(0.6 * 0.13 / 0.15 + 0.25, abs=1e-3)
    assert signal.reasons[0] == "model gives 63% chance of a higher close tomorrow (walk-forward accuracy 55.0%)"
    assert signal.reasons[1] == "20-day average is above the 50-day (uptrend)"
    assert signal.reasons[2].startswith("RSI ") and signal.reasons[2].endswith(": neutral")
    assert "model and trend agree" in signal.reasons[3]
    assert signal.last_price == pytest.approx(float(UPTREND["close"].iloc[-1]))
    assert signal.as_of == UPTREND.index[-1].date().isoformat()
    assert signal.prob_up == pytest.approx(0.63)


def test_the_first_reason_says_when_the_symbols_model_did_worse_than_its_baselines():
    worse = {"accuracy": 0.50, "baseline_accuracy": 0.553, "up_rate": 0.512, "n_predictions": 585, "verdict": "worse"}
    signal = decide({"UP": UPTREND}, {"UP": 0.63}, metrics=worse)["UP"]
    assert signal.reasons[0] == (
        "model gives 63% chance of a higher close tomorrow (walk-forward accuracy 50.0%, "
        "below the moving-average baseline's 55.3%: no better than chance)"
    )
    better = {"accuracy": 0.60, "baseline_accuracy": 0.52, "up_rate": 0.53, "n_predictions": 585, "verdict": "better"}
    signal = decide({"UP": UPTREND}, {"UP": 0.63}, metrics=better)["UP"]
    assert signal.reasons[0].endswith("(walk-forward accuracy 60.0%, above the always-up rule's 53.0%)")


def test_model_and_downtrend_agree_sell():
    signal = decide({"DN": DOWNTREND}, {"DN": 0.3})["DN"]
    assert signal.action == "SELL"
    assert signal.strength == pytest.approx(0.85, abs=1e-3)  # 0.6 * -1 + 0.25 * -1
    assert "below the 50-day (downtrend)" in signal.reasons[1]


def test_undecided_model_holds_whatever_the_trend():
    signal = decide({"UP": UPTREND}, {"UP": 0.53})["UP"]
    assert signal.action == "HOLD"
    assert "model is undecided" in signal.reasons[3]
    assert signal.strength == pytest.approx(0.6 * 0.03 / 0.15 + 0.25, abs=1e-3)


def test_trend_can_veto_the_model():
    signal = decide({"DN": DOWNTREND}, {"DN": 0.6})["DN"]
    assert signal.action == "HOLD"
    assert "model and trend disagree" in signal.reasons[3]


def test_overbought_rsi_is_a_reason_and_weighs_against_buying():
    signal = decide({"R": RISING}, {"R": 0.6})["R"]
    assert "RSI 100: overbought" in signal.reasons
    # 0.6 * (0.1 / 0.15) + 0.25 - 0.15
    assert signal.score == pytest.approx(0.5, abs=1e-3)
    assert signal.action == "BUY"


def test_recent_crossover_is_named():
    # 60 bars falling, then a sharp rise: the 20-day average crosses the 50-day
    bars = bars_from_changes([-1.0] * 60 + [4.0] * 20)
    sma20, sma50 = compute_features(bars)[["sma_20", "sma_50"]].T.to_numpy()
    above = sma20 > sma50
    cross = int(np.flatnonzero(~above[:-1] & above[1:])[-1]) + 1
    trimmed = bars.iloc[: cross + 3]  # the cross happened 2 bars before the last
    signal = decide({"X": trimmed}, {"X": 0.5})["X"]
    assert "20-day average crossed above the 50-day 2 days ago" in signal.reasons


def test_symbol_without_enough_history_holds_with_the_reason():
    short = bars_from_changes([1.0] * 20)
    signals = decide({"UP": UPTREND, "NEW": short}, {"UP": 0.7})
    assert signals["NEW"].action == "HOLD"
    assert signals["NEW"].strength == 0.0
    assert "not enough history" in signals["NEW"].reasons[0]
    assert signals["NEW"].last_price == pytest.approx(float(short["close"].iloc[-1]))
    assert signals["UP"].action == "BUY"


def test_an_unscored_symbol_holds_with_the_models_reason():
    reason = "not enough history to score: walk-forward needs more than 120 labelled days"
    signals = decide({"UP": UPTREND, "NEW": bars_from_changes([1.0] * 20)}, {"UP": 0.7}, unscored={"NEW": reason})
    assert signals["NEW"].action == "HOLD" and signals["NEW"].reasons == [reason]


def test_thresholds_are_adjustable():
    features = {"UP": compute_features(UPTREND)}
    strict = decide_signals(result_for({"UP": 0.53}, features), features, {"UP": UPTREND}, decisive_margin=0.02)
    assert strict[0].action == "BUY"


def test_payload_counts_and_shape():
    signals = list(decide({"UP": UPTREND, "DN": DOWNTREND, "R": RISING}, {"UP": 0.63, "DN": 0.3, "R": 0.5}).values())
    payload = signals_payload(signals)
    assert payload["counts"] == {"BUY": 1, "SELL": 1, "HOLD": 1}
    assert [s["symbol"] for s in payload["signals"]] == ["DN", "R", "UP"]
    first = payload["signals"][0]
    assert {"symbol", "action", "strength", "last_price", "as_of", "reasons"} <= set(first)
    assert all(0.0 <= s["strength"] <= 1.0 for s in payload["signals"])
    assert payload["as_of"] == UPTREND.index[-1].date().isoformat()
    assert signals_payload([]) == {"signals": [], "counts": {"BUY": 0, "SELL": 0, "HOLD": 0}, "as_of": None}
