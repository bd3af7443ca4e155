"""Backtest arithmetic: positions decided at a close earn the next bar's return.

No costs or slippage; returns are simple close-to-close. The equity curve starts at
1.0 before the first return, so a loss on day one is a drawdown.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from services.signals.analytics.features import TRADING_DAYS_PER_YEAR

MODEL_RULE = "long when the model predicts a higher close, flat otherwise (no shorting, no costs)"
BASELINE_RULE = "long while the 20-day average is above the 50-day, flat otherwise (no costs)"


def _sharpe(returns: np.ndarray) -> float:
    # A return series without variance (e.g. always flat) has no defined Sharpe; 0.0
    # keeps the field numeric for reports and JSON.
    if len(returns) < 2:
        return 0.0
    std = float(np.std(returns, ddof=1))
    if std == 0.0 or math.isnan(std):
        return 0.0
    return float(np.mean(returns) / std * math.sqrt(TRADING_DAYS_PER_YEAR))


def _max_drawdown(returns: np.ndarray) -> float:
    equity = np.concatenate([[1.0], np.cumprod(1.0 + returns)])
    return float(np.min(equity / np.maximum.accumulate(equity) - 1.0))


def _performance(strategy: np.ndarray, asset: np.ndarray, turnover_sum: float, exposure: np.ndarray) -> dict:
    days = len(strategy)
    return {
        "total_return": float(np.prod(1.0 + strategy) - 1.0),
        "buy_and_hold_return": float(np.prod(1.0 + asset) - 1.0),
        "sharpe": _sharpe(strategy),
        "max_drawdown": _max_drawdown(strategy),
        "turnover": float(turnover_sum / days) if days else 0.0,
        "days": days,
        "buy_and_hold_sharpe": _sharpe(asset),
        "buy_and_hold_max_drawdown": _max_drawdown(asset),
        "exposure": float(np.mean(np.abs(exposure))) if days else 0.0,
    }


def backtest(positions: pd.Series, close: pd.Series) -> dict:
    """Performance of `positions` (in {-1, 0, 1}, decided at close t, held t -> t+1) on `close`.

    Positions are aligned to the close's dates; a missing position is flat. The last
    close has no next bar, so its position is never applied: `days` = len(close) - 1.
    turnover = (|first position| + sum |position change|) / days: entering counts.
    """
    close = close.astype(float)
    held = positions.reindex(close.index).fillna(0.0).astype(float).to_numpy()[:-1]
    asset = (close.shift(-1) / close - 1.0).to_numpy()[:-1]
    changes = np.abs(np.diff(np.concatenate([[0.0], held])))
    return _performance(held * asset, asset, float(changes.sum()), held)


def _pooled(positions: pd.DataFrame, closes: pd.DataFrame) -> dict:
    """Equal-weight portfolio across symbols, rebalanced daily (each symbol 1/N of capital)."""
    asset = (closes.shift(-1) / closes - 1.0).iloc[:-1]
    held = positions.reindex(closes.index).fillna(0.0).iloc[:-1]
    # A symbol without a bar (or a next bar) that day contributes nothing and holds nothing.
    live = asset.notna()
    held = held.where(live, 0.0)
    asset = asset.fillna(0.0)
    weights = live.sum(axis=1).replace(0, np.nan)
    strategy = ((held * asset).sum(axis=1) / weights).fillna(0.0).to_numpy()
    benchmark = (asset.sum(axis=1) / weights).fillna(0.0).to_numpy()
    exposure = (held.abs().sum(axis=1) / weights).fillna(0.0).to_numpy()
    changes = held.diff().fillna(held).abs().sum(axis=1) / weights
    return _performance(strategy, benchmark, float(changes.fillna(0.0).sum()), exposure)


def backtest_signals(result, bars: dict[str, pd.DataFrame]) -> dict:
    """Backtest the walk-forward's out-of-sample predictions and the MA-crossover baseline.

    Model rule: long when predicted up, flat otherwise; baseline: long in an uptrend.
    Per symbol over its out-of-sample dates (plus the next bar, which realizes the
    last day's return), and pooled as an equal-weight daily-rebalanced portfolio;
    each compared with buy-and-hold over the same days.
    """
    predictions = result.predictions
    per_symbol: dict[str, dict] = {}
    baseline_per_symbol: dict[str, dict] = {}
    model_positions, baseline_positions, closes = {}, {}, {}
    for symbol, rows in predictions.groupby(level="symbol", sort=True):
        rows = rows.droplevel("symbol")
        close = bars[symbol]["close"].astype(float)
        start = close.index.get_loc(rows.index.min())
        end = close.index.get_loc(rows.index.max())
        window = close.iloc[start : end + 2]
        model_pos = rows["predicted_up"].astype(float)
        baseline_pos = rows["baseline_up"].astype(float)
        per_symbol[symbol] = backtest(model_pos, window)
        baseline_per_symbol[symbol] = backtest(baseline_pos, window)
        model_positions[symbol], baseline_positions[symbol], closes[symbol] = model_pos, baseline_pos, window
    if not closes:
        raise ValueError("the walk-forward result has no out-of-sample predictions to backtest")
    close_frame = pd.DataFrame(closes).sort_index()
    dates = predictions.index.get_level_values("date")
    return {
        "rule": MODEL_RULE,
        "baseline_rule": BASELINE_RULE,
        "period": {"start": dates.min().date().isoformat(), "end": dates.max().date().isoformat()},
        "pooled": _pooled(pd.DataFrame(model_positions), close_frame),
        "baseline_pooled": _pooled(pd.DataFrame(baseline_positions), close_frame),
        "per_symbol": per_symbol,
        "baseline_per_symbol": baseline_per_symbol,
    }
