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


WORSE = {"verdict": "worse", "verdict_text": "The model did worse than the moving-average baseline out of sample "
          "(48.9% vs 51.3%): treat its signals as no better than chance."}
BETTER = {"verdict": "better", "verdict_text": "The model did better than its baselines out of sample "
          "(60.0% vs 52.0% for the moving-average baseline and 53.0% for the always-up rule, over 1000 predictions)."}
PER_SYMBOL = {
    "AAPL": {"accuracy": 0.5, "baseline_accuracy": 0.553, "up_rate": 0.512, "n_predictions": 584, "verdict": "worse",
             "verdict_text": "AAPL's model did worse than the moving-average baseline and the always-up rule out of sample "
             "(50.0% vs 55.3% and 51.2%): treat its signals as no better than chance."},
    "IBM": {"accuracy": 0.529, "baseline_accuracy": 0.512, "up_rate": 0.507, "n_predictions": 584,
            "verdict": "no_better", "verdict_text": "IBM's model did not clearly beat the moving-average baseline."},
}
REPLAYED = {"symbols": ["AAPL", "IBM"], "start": "2010-03-03", "end": "2013-03-01", "replayed": True,
            "source": "bokeh-sampledata stocks.csv.gz", "provider": "sample_file"}


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
    assert "| – | 0 | 2022-01-03 → 2022-06-30 | 2022-07-01 → 2022-09-30 | 300 | 52.0% | 50.0% | – |" in text
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


def test_the_first_lines_say_when_the_data_is_replayed_sample_data():
    lines = report(data_summary=REPLAYED).splitlines()
    assert lines[0] == "# Signals run `exec-1`"
    assert lines[2] == (
        "> **Replayed sample data**: historical bars replayed from bokeh-sampledata stocks.csv.gz by the "
        "`sample_file` provider, last bar 2013-03-01, not live market data. These signals show how the "
        "workflow works, not what to trade today."
    )
    live = report(data_summary={**REPLAYED, "replayed": False, "source": "ibkr"})
    assert "Replayed" not in live and live.splitlines()[2].startswith("Workflow `")


def test_a_model_worse_than_its_baselines_is_said_at_the_top_and_in_the_model_section():
    text = report(data_summary=REPLAYED, metrics={**METRICS, **WORSE}, per_symbol=PER_SYMBOL)
    lines = text.splitlines()
    assert lines[4] == (
        "> **Model verdict**: The model did worse than the moving-average baseline out of sample (48.9% vs 51.3%): "
        "treat its signals as no better than chance."
    )
    assert "> Symbols whose own model did worse than its baselines: AAPL." in lines[5:10]
    assert "> Symbols whose own model did not clearly beat its baselines: IBM." in lines[5:10]
    model = text[text.index("## Model") :]
    assert "**Verdict**: The model did worse than the moving-average baseline" in model
    assert "Scope: one model per symbol" in model
    assert "| Symbol | Accuracy | MA baseline | Always up | Predictions | Verdict |" in model
    assert "| AAPL | 50.0% | 55.3% | 51.2% | 584 | AAPL's model did worse than" in model


def test_a_model_better_than_its_baselines_says_so():
    text = report(metrics={**METRICS, **BETTER}, per_symbol={"AAPL": {**PER_SYMBOL["AAPL"], **BETTER}})
    lines = text.splitlines()
    assert lines[2] == f"> **Model verdict**: {BETTER['verdict_text']}"
    assert "worse" not in text.split("## Signals")[0]
    assert "Symbols whose own model" not in text
