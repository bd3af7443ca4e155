"""Backtest arithmetic on series small enough to check by hand."""

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from services.signals.analytics.backtest import backtest, backtest_signals
from services.signals.analytics.model import WalkForwardResult

pytestmark = pytest.mark.unit

DATES = pd.bdate_range("2024-03-04", periods=5)
# returns close to close: +10%, +10%, -10%, +10%
CLOSE = pd.Series([100.0, 110.0, 121.0, 108.9, 119.79], index=DATES)


def test_long_then_flat():
    # held: long, long, long, flat -> +10%, +10%, -10%, 0; the last position has no next bar
    result = backtest(pd.Series([1, 1, 1, 0, 1], index=DATES), CLOSE)
    assert result["days"] == 4
    assert result["total_return"] == pytest.approx(1.1 * 1.1 * 0.9 - 1)  # 0.089
    assert result["buy_and_hold_return"] == pytest.approx(0.1979)
    # equity 1, 1.1, 1.21, 1.089, 1.089: worst fall from the 1.21 peak
    assert result["max_drawdown"] == pytest.approx(1.089 / 1.21 - 1)  # -0.10
    # enter (1), hold, hold, exit (1) over 4 days
    assert result["turnover"] == pytest.approx(2 / 4)
    daily = [0.1, 0.1, -0.1, 0.0]
    assert result["sharpe"] == pytest.approx(statistics.mean(daily) / statistics.stdev(daily) * math.sqrt(252))
    assert result["exposure"] == pytest.approx(0.75)


def test_short_and_reversal():
    # held: flat, short, short, long -> 0, -10%, +10%, +10%
    result = backtest(pd.Series([0, -1, -1, 1, 0], index=DATES), CLOSE)
    assert result["total_return"] == pytest.approx(0.9 * 1.1 * 1.1 - 1)
    # equity 1, 1, 0.9, 0.99, 1.089
    assert result["max_drawdown"] == pytest.approx(-0.1)
    # 0 -> -1 (1), -1 -> -1 (0), -1 -> 1 (2)
    assert result["turnover"] == pytest.approx(3 / 4)


def test_buy_and_hold_positions_match_the_benchmark():
    result = backtest(pd.Series(1, index=DATES), CLOSE)
    assert result["total_return"] == pytest.approx(result["buy_and_hold_return"])
    assert result["sharpe"] == pytest.approx(result["buy_and_hold_sharpe"])
    assert result["max_drawdown"] == pytest.approx(result["buy_and_hold_max_drawdown"]) == pytest.approx(-0.1)
    assert result["turnover"] == pytest.approx(1 / 4)


def test_always_flat_and_missing_positions():
    flat = backtest(pd.Series(dtype=float), CLOSE)
    assert flat["total_return"] == 0.0
    assert flat["sharpe"] == 0.0
    assert flat["max_drawdown"] == 0.0
    assert flat["turnover"] == 0.0
    # only the third day has a position: short through the -10% day
    one_day = backtest(pd.Series([-1], index=DATES[2:3]), CLOSE)
    assert one_day["total_return"] == pytest.approx(0.1)
    assert one_day["turnover"] == pytest.approx(2 / 4)


def test_drawdown_counts_a_loss_on_the_first_day():
    close = pd.Series([100.0, 80.0, 100.0], index=DATES[:3])
    result = backtest(pd.Series(1, index=close.index), close)
    assert result["max_drawdown"] == pytest.approx(-0.2)
    assert result["total_return"] == pytest.approx(0.0)


def hand_result() -> tuple[WalkForwardResult, dict]:
    """Two symbols, three out-of-sample days each, and the next bar."""
    dates = pd.bdate_range("2024-01-01", periods=5)
    bars = {
        "AAA": pd.DataFrame({"close": [50.0, 100.0, 110.0, 99.0, 108.9]}, index=dates),  # +10%, -10%, +10%
        "BBB": pd.DataFrame({"close": [10.0, 20.0, 20.0, 22.0, 22.0]}, index=dates),  # 0, +10%, 0
    }
    index = pd.MultiIndex.from_product([["AAA", "BBB"], dates[1:4]], names=["symbol", "date"])
    predictions = pd.DataFrame(
        {
            "prob_up": [0.6, 0.4, 0.7, 0.6, 0.6, 0.3],
            "predicted_up": [True, False, True, True, True, False],
            "actual_up": [True, False, True, False, True, False],
            "baseline_up": [True, True, True, False, False, False],
            "fold": 0,
        },
        index=index,
    )
    result = WalkForwardResult(
        model_type="hand", params={}, feature_names=[], training_window={}, folds=[], metrics={},
        predictions=predictions, models={}, latest_features=pd.DataFrame(),
    )
    return result, bars


def test_backtest_signals_per_symbol_and_pooled():
    result, bars = hand_result()
    report = backtest_signals(result, bars)
    assert report["period"] == {"start": "2024-01-02", "end": "2024-01-04"}
    aaa = report["per_symbol"]["AAA"]
    # long, flat, long: +10%, 0, +10%
    assert aaa["total_return"] == pytest.approx(0.21)
    assert aaa["buy_and_hold_return"] == pytest.approx(108.9 / 100 - 1)
    assert aaa["turnover"] == pytest.approx(3 / 3)
    bbb = report["per_symbol"]["BBB"]
    # long, long, flat: 0, +10%, 0
    assert bbb["total_return"] == pytest.approx(0.10)
    assert report["baseline_per_symbol"]["AAA"]["total_return"] == pytest.approx(1.1 * 0.9 * 1.1 - 1)
    pooled = report["pooled"]
    # equal weight per day: (10% + 0)/2, (0 + 10%)/2, (10% + 0)/2
    assert pooled["total_return"] == pytest.approx(1.05**3 - 1)
    # buy-and-hold of both: (10% + 0)/2, (-10% + 10%)/2, (10% + 0)/2
    assert pooled["buy_and_hold_return"] == pytest.approx(1.05 * 1.0 * 1.05 - 1)
    # position changes per day, averaged over symbols: (1+1)/2, (1+0)/2, (1+1)/2
    assert pooled["turnover"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert pooled["days"] == 3
    # baseline: AAA long all three days (+10%, -10%, +10%), BBB flat
    assert report["baseline_pooled"]["total_return"] == pytest.approx(1.05 * 0.95 * 1.05 - 1)
    assert "flat" in report["rule"]


def test_backtest_signals_without_predictions_is_an_error():
    result, bars = hand_result()
    empty = WalkForwardResult(
        model_type="hand", params={}, feature_names=[], training_window={}, folds=[], metrics={},
        predictions=result.predictions.iloc[0:0], models={}, latest_features=pd.DataFrame(),
    )
    with pytest.raises(ValueError, match="no out-of-sample predictions"):
        backtest_signals(empty, bars)


def test_results_are_plain_json_numbers():
    result = backtest(pd.Series([1, 0, 1, 1, 0], index=DATES), CLOSE)
    assert all(type(v) in (int, float) and not np.isnan(v) for v in result.values())
