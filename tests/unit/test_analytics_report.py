import pytest

from services.signals.analytics.report import run_report
from services.signals.analytics.signals import Signal

pytestmark = pytest.mark.unit

SIGNALS = [
    Signal("AAPL", "BUY", 0.62, 190.5, "2024-05-01", ["model gives 63% chance of a higher close tomorrow", "RSI 55: neutral"]),
    Signal("IBM", "HOLD", 0.1, 170.0, "2024-05-01", ["a|b"]),
]
METRICS = {"accuracy": 0.53, "precision": 0.55, "hit_rate": 0.57, "baseline_accuracy": 0.5, "n_predictions": 800, "n_folds": 5}
BACKTEST = {
    "rule": "long when the model predicts a higher close, flat otherwise",
    "baseline_rule": "long in an uptrend",
    "period": {"start": "2023-01-03", "end": "2024-04-30"},
    "pooled": {"total_return": 0.12, "buy_and_hold_return": 0.2, "sharpe": 1.1, "max_drawdown": -0.08,
               "turnover": 0.3, "days": 330, "exposure": 0.55, "buy_and_hold_sharpe": 1.3, "buy_and_hold_max_drawdown": -0.15},
    "baseline_pooled": {"total_return": 0.05, "buy_and_hold_return": 0.2, "sharpe": 0.4, "max_drawdown": -0.1,
                        "turnover": 0.02, "days": 330, "exposure": 0.6},
    "per_symbol": {"AAPL": {"total_return": 0.1, "buy_and_hold_return": 0.2, "sharpe": 0.9, "max_drawdown": -0.1, "turnover": 0.3}},
}
DIFF = {
    "previous_available": True, "previous_execution_id": "exec-0",
    "changed": [{"symbol": "AAPL", "from": "HOLD", "to": "BUY"}],
    "strength_moves": [{"symbol": "AAPL", "from": 0.2, "to": 0.62, "delta": 0.42}],
    "new": ["IBM"], "dropped": ["FB"], "unchanged": [],
}


def report(**overrides) -> str:
    arguments = dict(
        workflow_id="ibkr_trading_signal_workflow", execution_id="exec-1",
        data_summary={"symbols": ["AAPL", "IBM"], "bars": {"AAPL": {"rows": 500, "first": "2022-05-02"}}, "source": "ibkr"},
        metrics=METRICS, backtest=BACKTEST, signals=SIGNALS, diff=DIFF, failed_symbols={"ZZZZ": "unknown contract (200)"},
        folds=[{"fold": 0, "train_start": "2022-01-03", "train_end": "2022-06-30", "test_start": "2022-07-01",
                "test_end": "2022-09-30", "n": 300, "accuracy": 0.52, "precision": 0.5, "hit_rate": None}],
    )
    arguments.update(overrides)
    return run_report(**arguments)


def test_sections_in_order():
    text = report()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == [
        "# Signals run `exec-1`",
        "## Signals",
        "## Changes since the previous run",
        "## Model (walk-forward, out-of-sample)",
        "## Backtest vs buy-and-hold",
        "## Data",
        "## Failed symbols",
    ]
    assert "ibkr_trading_signal_workflow" in text


def test_contents():
    text = report()
    assert "| AAPL | **BUY** | 0.62 | 190.50 | 2024-05-01 | model gives 63% chance of a higher close tomorrow; RSI 55: neutral |" in text
    assert "a\\|b" in text  # a pipe in a reason does not break the table
    assert "1 BUY, 0 SELL, 1 HOLD" in text
    assert "- **AAPL**: HOLD → BUY" in text
    assert "AAPL strength 0.20 → 0.62 (+0.42)" in text
    assert "New symbols: IBM" in text and "Dropped symbols: FB" in text
    assert "| Accuracy (model) | 53.0% |" in text
    assert "| Total return | +12.00% | +5.00% | +20.00% |" in text
    assert "| Max drawdown | -8.00% | -10.00% | -15.00% |" in text
    assert "| Turnover (per day) | 0.300 | 0.020 | – |" in text
    assert "| 0 | 2022-01-03 → 2022-06-30 | 2022-07-01 → 2022-09-30 | 300 | 52.0% | 50.0% | – |" in text
    assert "| ZZZZ | unknown contract (200) |" in text
    assert "- **symbols**: AAPL, IBM" in text


def test_first_run_and_nothing_failed():
    text = report(diff=None, failed_symbols=None, folds=None)
    assert "No previous run to compare with." in text
    assert "## Failed symbols" not in text
    assert "**Folds**" not in text


def test_flat_backtest_dict_and_empty_inputs():
    text = report(backtest=BACKTEST["pooled"], signals=[], data_summary={}, metrics={})
    assert "No signals were produced." in text
    assert "| Total return | +12.00% | +20.00% |" in text
    assert "No model metrics were given." in text
