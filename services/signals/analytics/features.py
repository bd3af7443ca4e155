"""Technical features of one symbol's daily bars.

Moving averages, RSI and MACD come from the `ta` library (checked to work with
pandas 3); ATR is `ta`'s formula computed here; realized volatility and multi-horizon
returns are one-line pandas expressions that `ta` does not offer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from ta.momentum import RSIIndicator
from ta.trend import MACD, SMAIndicator

BAR_COLUMNS = ("open", "high", "low", "close", "volume")
TRADING_DAYS_PER_YEAR = 252

FEATURE_DESCRIPTIONS: dict[str, str] = {
    "sma_20": "Simple moving average of the close over the last 20 bars.",
    "sma_50": "Simple moving average of the close over the last 50 bars.",
    "rsi_14": (
        "Relative Strength Index over 14 bars (Wilder's smoothing, alpha = 1/14), 0..100; "
        "above 70 is read as overbought, below 30 as oversold."
    ),
    "macd": "MACD line: 12-bar EMA of the close minus its 26-bar EMA (price units).",
    "macd_signal": "MACD signal line: 9-bar EMA of the MACD line.",
    "macd_hist": "MACD histogram: MACD line minus its signal line.",
    "atr_14": "Average True Range over 14 bars (Wilder's smoothing), price units.",
    "volatility_20": (
        "Annualized realized volatility: standard deviation of the last 20 daily log "
        "returns times sqrt(252)."
    ),
    "ret_1d": "Simple return of the close over the last bar (close / previous close - 1).",
    "ret_5d": "Simple return of the close over the last 5 bars.",
    "ret_20d": "Simple return of the close over the last 20 bars.",
    "close_to_sma_20": "Close relative to its 20-bar average (close / sma_20 - 1).",
    "close_to_sma_50": "Close relative to its 50-bar average (close / sma_50 - 1).",
    "sma_20_over_50": "Spread of the 20-bar over the 50-bar average (sma_20 / sma_50 - 1); > 0 is an uptrend.",
    "macd_hist_pct": "MACD histogram as a fraction of the close, comparable across symbols.",
    "atr_pct": "ATR as a fraction of the close, comparable across symbols.",
    "volume_ratio_20": "Volume relative to its 20-bar average volume.",
}

# Scale-free columns only: a symbol's price level drifts over the years its model trains
# on, so raw price-level columns (sma_20, macd, atr_14) would make old rows unlike new ones.
MODEL_FEATURES: tuple[str, ...] = (
    "ret_1d",
    "ret_5d",
    "ret_20d",
    "volatility_20",
    "rsi_14",
    "close_to_sma_20",
    "close_to_sma_50",
    "sma_20_over_50",
    "macd_hist_pct",
    "atr_pct",
)

# Bars needed before every MODEL_FEATURES column has a value (sma_50 is the longest).
WARM_UP_BARS = 50


def validate_bars(bars: pd.DataFrame) -> None:
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars are missing columns {missing}; expected {list(BAR_COLUMNS)}")
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise ValueError(f"bars need a DatetimeIndex, got {type(bars.index).__name__}")
    if not bars.index.is_monotonic_increasing or bars.index.has_duplicates:
        raise ValueError("bars must be in ascending date order with one row per date")


def _average_true_range(high: pd.Series, low: pd.Series, close: pd.Series, window: int) -> pd.Series:
    """Wilder's average of the true range, as `ta` computes it, with the warm-up NaN
    ("not known yet") where `ta` puts 0.0. Its recurrence runs over plain floats here:
    `ta` indexes the series once per bar, the slowest part of all the features."""
    previous = close.shift(1)
    true_range = pd.concat([high - low, (high - previous).abs(), (low - previous).abs()], axis=1).max(axis=1)
    atr = np.full(len(close), np.nan)
    if len(close) >= window:
        ranges = true_range.to_numpy(dtype=float)
        value = ranges[:window].mean()
        atr[window - 1] = value
        for i in range(window, len(ranges)):
            value = (value * (window - 1) + ranges[i]) / float(window)
            atr[i] = value
    return pd.Series(atr, index=close.index)


def compute_features(bars: pd.DataFrame) -> pd.DataFrame:
    """Feature table of one symbol on the bars' own index; NaN in the warm-up rows."""
    validate_bars(bars)
    close = bars["close"].astype(float)
    high = bars["high"].astype(float)
    low = bars["low"].astype(float)
    volume = bars["volume"].astype(float)

    features = pd.DataFrame(index=bars.index)
    features["sma_20"] = SMAIndicator(close, window=20).sma_indicator()
    features["sma_50"] = SMAIndicator(close, window=50).sma_indicator()
    features["rsi_14"] = RSIIndicator(close, window=14).rsi()
    macd = MACD(close, window_slow=26, window_fast=12, window_sign=9)
    features["macd"] = macd.macd()
    features["macd_signal"] = macd.macd_signal()
    features["macd_hist"] = macd.macd_diff()
    features["atr_14"] = _average_true_range(high, low, close, window=14)
    log_returns = np.log(close / close.shift(1))
    features["volatility_20"] = log_returns.rolling(20).std() * np.sqrt(TRADING_DAYS_PER_YEAR)
    for horizon in (1, 5, 20):
        features[f"ret_{horizon}d"] = close / close.shift(horizon) - 1.0
    features["close_to_sma_20"] = close / features["sma_20"] - 1.0
    features["close_to_sma_50"] = close / features["sma_50"] - 1.0
    features["sma_20_over_50"] = features["sma_20"] / features["sma_50"] - 1.0
    features["macd_hist_pct"] = features["macd_hist"] / close
    features["atr_pct"] = features["atr_14"] / close
    features["volume_ratio_20"] = volume / volume.rolling(20).mean()

    features = features.replace([np.inf, -np.inf], np.nan).astype(float)
    features.index.name = "date"
    return features[list(FEATURE_DESCRIPTIONS)]
