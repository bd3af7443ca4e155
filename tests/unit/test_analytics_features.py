"""Indicator values against formulas written out here, on fixed hand-made bars."""

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from services.signals.analytics.features import FEATURE_DESCRIPTIONS, MODEL_FEATURES, compute_features

pytestmark = pytest.mark.unit

N = 130


def fixed_bars(n: int = N) -> pd.DataFrame:
    closes, highs, lows, opens = [], [], [], []
    for i in range(n):
        close = 100.0 + 10.0 * math.sin(i / 5.0) + 0.3 * i + (1.7 if i % 7 == 0 else 0.0)
        opens.append(closes[-1] if closes else close)
        closes.append(close)
        highs.append(close + 1.0 + 0.5 * (i % 3))
        lows.append(close - 1.0 - 0.7 * (i % 2))
    index = pd.DatetimeIndex(pd.bdate_range("2024-01-01", periods=n), name="date")
    volume = [1_000_000.0 + 10_000.0 * (i % 5) for i in range(n)]
    return pd.DataFrame(
        {"open": opens, "high": highs, "low": lows, "close": closes, "volume": volume}, index=index
    )


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return fixed_bars()


@pytest.fixture(scope="module")
def features(bars) -> pd.DataFrame:
    return compute_features(bars)


def closes(bars) -> list[float]:
    return [float(c) for c in bars["close"]]


def assert_series(actual: pd.Series, expected: list[float | None], *, tol: float = 1e-9) -> None:
    assert len(actual) == len(expected)
    for i, (got, want) in enumerate(zip(actual.to_numpy(), expected)):
        if want is None:
            assert math.isnan(got), f"row {i}: expected NaN (warm-up), got {got}"
        else:
            assert got == pytest.approx(want, rel=tol, abs=tol), f"row {i}"


def ema(values: list[float | None], span: int) -> list[float | None]:
    """EMA seeded with the first known value, alpha = 2 / (span + 1), shown after `span` values."""
    alpha = 2.0 / (span + 1.0)
    out: list[float | None] = []
    current, seen = None, 0
    for value in values:
        if value is None:
            out.append(None)
            continue
        current = value if current is None else alpha * value + (1 - alpha) * current
        seen += 1
        out.append(current if seen >= span else None)
    return out


def test_columns_and_descriptions(bars, features):
    assert list(features.columns) == list(FEATURE_DESCRIPTIONS)
    for required in ("sma_20", "sma_50", "rsi_14", "macd", "macd_signal", "macd_hist", "atr_14",
                     "volatility_20", "ret_1d", "ret_5d", "ret_20d"):
        assert required in features.columns
    assert set(MODEL_FEATURES) <= set(features.columns)
    assert features.index.equals(bars.index)
    assert all(isinstance(text, str) and text for text in FEATURE_DESCRIPTIONS.values())


def test_sma_is_explicit_mean(bars, features):
    c = closes(bars)
    for window in (20, 50):
        expected = [None if i < window - 1 else sum(c[i - window + 1 : i + 1]) / window for i in range(N)]
        assert_series(features[f"sma_{window}"], expected)


def test_rsi_is_wilders_recursion(bars, features):
    c = closes(bars)
    # Wilder's smoothing avg_t = avg_{t-1} + (x_t - avg_{t-1}) / 14, started (like the
    # `ta` library) from the first bar, whose change is taken as 0; shown from bar 14.
    avg_gain = avg_loss = 0.0
    expected: list[float | None] = []
    for i in range(N):
        change = c[i] - c[i - 1] if i else 0.0
        avg_gain += (max(change, 0.0) - avg_gain) / 14
        avg_loss += (max(-change, 0.0) - avg_loss) / 14
        expected.append(None if i < 13 else (100.0 if avg_loss == 0 else 100 - 100 / (1 + avg_gain / avg_loss)))
    assert_series(features["rsi_14"], expected)


def test_rsi_converges_to_textbook_wilder(bars, features):
    c = closes(bars)
    changes = [c[i] - c[i - 1] for i in range(1, N)]
    gain = sum(max(x, 0.0) for x in changes[:14]) / 14
    loss = sum(max(-x, 0.0) for x in changes[:14]) / 14
    textbook = {14: 100 - 100 / (1 + gain / loss)}
    for i in range(15, N):
        x = changes[i - 1]
        gain = (gain * 13 + max(x, 0.0)) / 14
        loss = (loss * 13 + max(-x, 0.0)) / 14
        textbook[i] = 100 - 100 / (1 + gain / loss)
    # Only the seed differs, and its weight decays as (13/14)^n.
    for i in range(100, N):
        assert features["rsi_14"].iloc[i] == pytest.approx(textbook[i], abs=0.05)


def test_rsi_extremes():
    rising = fixed_bars(40)
    rising["close"] = [100.0 + i for i in range(40)]
    rsi = compute_features(rising)["rsi_14"]
    assert rsi.iloc[13:].eq(100.0).all()
    # Alternating +1/-1 ending on a rise: in the steady state the smoothed gain is
    # 14/13 of the smoothed loss, so RSI = 100 * 14 / 27 after a rise, 100 * 13 / 27 after a fall.
    zigzag = fixed_bars(400)
    zigzag["close"] = [100.0 + (i % 2) for i in range(400)]
    rsi = compute_features(zigzag)["rsi_14"]
    assert rsi.iloc[-1] == pytest.approx(1400 / 27, abs=1e-6)
    assert rsi.iloc[-2] == pytest.approx(1300 / 27, abs=1e-6)


def test_macd_is_ema_difference(bars, features):
    c = closes(bars)
    fast, slow = ema(c, 12), ema(c, 26)
    line = [None if f is None or s is None else f - s for f, s in zip(fast, slow)]
    signal = ema(line, 9)
    hist = [None if m is None or s is None else m - s for m, s in zip(line, signal)]
    assert_series(features["macd"], line)
    assert_series(features["macd_signal"], signal)
    assert_series(features["macd_hist"], hist)
    assert features["macd"].first_valid_index() == bars.index[25]
    assert features["macd_signal"].first_valid_index() == bars.index[33]


def test_atr_is_wilder_average_of_true_range(bars, features):
    high, low, c = list(bars["high"]), list(bars["low"]), closes(bars)
    true_range = [high[0] - low[0]] + [
        max(high[i] - low[i], abs(high[i] - c[i - 1]), abs(low[i] - c[i - 1])) for i in range(1, N)
    ]
    expected: list[float | None] = [None] * 13
    atr = sum(true_range[:14]) / 14
    expected.append(atr)
    for i in range(14, N):
        atr = (atr * 13 + true_range[i]) / 14
        expected.append(atr)
    assert_series(features["atr_14"], expected)
    assert_series(features["atr_pct"], [None if a is None else a / ci for a, ci in zip(expected, c)])


def test_realized_volatility_and_returns(bars, features):
    c = closes(bars)
    log_returns = [math.log(c[i] / c[i - 1]) for i in range(1, N)]
    expected_vol = [
        None if i < 20 else statistics.stdev(log_returns[i - 20 : i]) * math.sqrt(252) for i in range(N)
    ]
    assert_series(features["volatility_20"], expected_vol)
    for horizon in (1, 5, 20):
        expected = [None if i < horizon else c[i] / c[i - horizon] - 1 for i in range(N)]
        assert_series(features[f"ret_{horizon}d"], expected)


def test_relative_columns(bars, features):
    c = np.array(closes(bars))
    np.testing.assert_allclose(features["close_to_sma_20"], c / features["sma_20"] - 1)
    np.testing.assert_allclose(features["sma_20_over_50"], features["sma_20"] / features["sma_50"] - 1)
    np.testing.assert_allclose(features["macd_hist_pct"], features["macd_hist"] / c)
    v = bars["volume"].to_numpy()
    assert features["volume_ratio_20"].iloc[-1] == pytest.approx(v[-1] / v[-20:].mean())


def test_features_never_look_ahead(bars, features):
    """Each row computed from the bars up to that date only equals the full computation."""
    for end in (20, 34, 50, 77, N - 1):
        partial = compute_features(bars.iloc[: end + 1])
        pd.testing.assert_series_equal(partial.iloc[-1], features.iloc[end], check_names=False)


def test_model_features_complete_after_warm_up(features):
    model_columns = features[list(MODEL_FEATURES)]
    assert model_columns.iloc[:49].isna().any(axis=1).all()
    assert model_columns.iloc[49:].notna().all(axis=None)


def test_short_history_is_all_nan_not_an_error():
    short = compute_features(fixed_bars(10))
    assert len(short) == 10
    assert short[["sma_20", "atr_14", "rsi_14", "macd"]].isna().all(axis=None)


def test_input_is_not_modified(bars):
    before = bars.copy()
    compute_features(bars)
    pd.testing.assert_frame_equal(bars, before)


def test_rejects_bad_bars():
    bars = fixed_bars(30)
    with pytest.raises(ValueError, match="missing columns"):
        compute_features(bars.drop(columns=["volume"]))
    with pytest.raises(ValueError, match="ascending"):
        compute_features(bars.iloc[::-1])
    with pytest.raises(ValueError, match="DatetimeIndex"):
        compute_features(bars.reset_index(drop=True))
