"""Markdown summary of one signals run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.signals.analytics.model import SCOPE
from services.signals.analytics.signals import Signal

METRIC_ROWS = (
    ("accuracy", "Accuracy (model)"),
    ("precision", "Precision (model)"),
    ("hit_rate", "Hit rate (decisive predictions)"),
    ("baseline_accuracy", "Accuracy (MA-crossover baseline)"),
    ("up_rate", "Share of up days (always-up accuracy)"),
    ("n_predictions", "Out-of-sample predictions"),
    ("n_folds", "Walk-forward folds"),
)
BACKTEST_ROWS = (
    ("total_return", "Total return", "pct"),
    ("sharpe", "Sharpe (annualized)", "ratio"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("turnover", "Turnover (per day)", "turnover"),
    ("exposure", "Exposure", "share"),
)
BUY_AND_HOLD_KEYS = {
    "total_return": "buy_and_hold_return",
    "sharpe": "buy_and_hold_sharpe",
    "max_drawdown": "buy_and_hold_max_drawdown",
}


def _cell(value: Any) -> str:
    text = "–" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _pct(value: Any) -> str:
    return "–" if value is None else f"{float(value):+.2%}"


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _cell(value)
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _share(value: Any) -> str:
    return "–" if value is None else f"{float(value):.1%}"


def _ratio(value: Any) -> str:
    return "–" if value is None else f"{float(value):.2f}"


def _turnover(value: Any) -> str:
    return "–" if value is None else f"{float(value):.3f}"


FORMATS = {"pct": _pct, "share": _share, "ratio": _ratio, "turnover": _turnover}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _data_section(summary: Mapping) -> list[str]:
    lines = ["## Data", ""]
    if not summary:
        return lines + ["No data summary was given.", ""]
    scalars = {k: v for k, v in summary.items() if not isinstance(v, (Mapping, list))}
    lines += [f"- **{_cell(k)}**: {_cell(v)}" for k, v in scalars.items()]
    for key, value in summary.items():
        if isinstance(value, list):
            lines.append(f"- **{_cell(key)}**: {', '.join(_cell(v) for v in value) or '–'}")
        elif isinstance(value, Mapping):
            if value and all(isinstance(v, Mapping) for v in value.values()):
                # e.g. per-symbol details: one table row per symbol
                columns = sorted({c for v in value.values() for c in v}, key=str)
                lines += ["", f"**{_cell(key)}**", ""]
                body = [[name] + [_cell(row.get(c)) for c in columns] for name, row in value.items()]
                lines += _table([""] + [str(c) for c in columns], body)
            else:
                pairs = ", ".join(f"{_cell(k)}={_cell(v)}" for k, v in value.items())
                lines.append(f"- **{_cell(key)}**: {pairs}")
    return lines + [""]


def _signals_section(signals: list[Signal]) -> list[str]:
    lines = ["## Signals", ""]
    if not signals:
        return lines + ["No signals were produced.", ""]
    counts = {a: sum(1 for s in signals if s.action == a) for a in ("BUY", "SELL", "HOLD")}
    summary = ", ".join(f"{n} {a}" for a, n in counts.items())
    lines += [f"{summary} as of {max(s.as_of for s in signals)}.", ""]
    lines += _table(
        ["Symbol", "Action", "Strength", "Last price", "As of", "Reasons"],
        [
            [s.symbol, f"**{s.action}**", f"{s.strength:.2f}", f"{s.last_price:,.2f}", s.as_of, "; ".join(s.reasons)]
            for s in signals
        ],
    )
    return lines + [""]


def _replay_notice(summary: Mapping) -> list[str]:
    if not summary.get("replayed"):
        return []
    source = f" from {summary['source']}" if summary.get("source") else ""
    provider = f" by the `{summary['provider']}` provider" if summary.get("provider") else ""
    last = f", last bar {summary['end']}" if summary.get("end") else ""
    return [
        f"> **Replayed sample data**: historical bars replayed{source}{provider}{last}, not live market "
        "data. These signals show how the workflow works, not what to trade today.",
        "",
    ]


def _verdict_notice(metrics: Mapping, per_symbol: Mapping[str, Mapping]) -> list[str]:
    if not metrics.get("verdict_text"):
        return []
    lines = [f"> **Model verdict**: {metrics['verdict_text']}"]
    shortfalls = (("worse", "did worse than its baselines"), ("no_better", "did not clearly beat its baselines"))
    for verdict, label in shortfalls:
        symbols = [s for s, m in per_symbol.items() if m.get("verdict") == verdict]
        if symbols:
            lines += [">", f"> Symbols whose own model {label}: {', '.join(symbols)}."]
    return lines + [""]


def _per_symbol_table(per_symbol: Mapping[str, Mapping]) -> list[str]:
    lines = ["", "**Per symbol** (each symbol's own model, out of sample)", ""]
    return lines + _table(
        ["Symbol", "Accuracy", "MA baseline", "Always up", "Predictions", "Verdict"],
        [
            [
                symbol,
                _share(m.get("accuracy")),
                _share(m.get("baseline_accuracy")),
                _share(m.get("up_rate")),
                _num(m.get("n_predictions")),
                _cell(m.get("verdict_text")),
            ]
            for symbol, m in per_symbol.items()
        ],
    )


def _model_section(metrics: Mapping, folds: list[Mapping] | None, per_symbol: Mapping[str, Mapping]) -> list[str]:
    lines = ["## Model (walk-forward, out-of-sample)", ""]
    if metrics.get("verdict_text"):
        lines += [f"**Verdict**: {metrics['verdict_text']}", ""]
    if per_symbol:
        lines += [f"Scope: {SCOPE}.", ""]
    rows = []
    for key, label in METRIC_ROWS:
        if key in metrics:
            value = metrics[key]
            rows.append([label, _share(value) if isinstance(value, float) else _num(value)])
    lines += _table(["Metric", "Value"], rows) if rows else ["No model metrics were given."]
    if per_symbol:
        lines += _per_symbol_table(per_symbol)
    if folds:
        lines += ["", "**Folds** (each trains only on rows whose date and label date precede its test window)", ""]
        lines += _table(
            ["Symbol", "Fold", "Train", "Test", "Rows", "Accuracy", "Precision", "Hit rate"],
            [
                [
                    _cell(f.get("symbol")),
                    str(f.get("fold", i)),
                    f"{f.get('train_start')} → {f.get('train_end')}",
                    f"{f.get('test_start')} → {f.get('test_end')}",
                    _num(f.get("n")),
                    _share(f.get("accuracy")),
                    _share(f.get("precision")),
                    _share(f.get("hit_rate")),
                ]
                for i, f in enumerate(folds)
            ],
        )
    return lines + [""]


def _backtest_section(result: Mapping) -> list[str]:
    lines = ["## Backtest vs buy-and-hold", ""]
    if not result:
        return lines + ["No backtest was run.", ""]
    # A bare backtest() dict, or backtest_signals() with the model, baseline and per symbol.
    model = result.get("pooled", result)
    baseline = result.get("baseline_pooled")
    if "period" in result:
        period = result["period"]
        lines.append(f"Out-of-sample period {period['start']} → {period['end']}, {model.get('days')} days.")
    if "rule" in result:
        lines.append(f"Model: {result['rule']}.")
    if "baseline_rule" in result:
        lines.append(f"Baseline: {result['baseline_rule']}.")
    lines.append("")
    header = ["", "Model"] + (["Baseline"] if baseline else []) + ["Buy & hold"]
    rows = []
    for key, label, kind in BACKTEST_ROWS:
        fmt = FORMATS[kind]
        hold_key = BUY_AND_HOLD_KEYS.get(key)
        hold = fmt(model.get(hold_key)) if hold_key else (_share(1.0) if key == "exposure" else "–")
        rows.append([label, fmt(model.get(key))] + ([fmt(baseline.get(key))] if baseline else []) + [hold])
    lines += _table(header, rows)
    per_symbol = result.get("per_symbol")
    if per_symbol:
        lines += ["", "**Per symbol (model)**", ""]
        lines += _table(
            ["Symbol", "Return", "Buy & hold", "Sharpe", "Max drawdown", "Turnover"],
            [
                [
                    symbol,
                    _pct(b["total_return"]),
                    _pct(b["buy_and_hold_return"]),
                    _ratio(b["sharpe"]),
                    _pct(b["max_drawdown"]),
                    _turnover(b["turnover"]),
                ]
                for symbol, b in per_symbol.items()
            ],
        )
    return lines + [""]


def _diff_section(diff: Mapping | None) -> list[str]:
    lines = ["## Changes since the previous run", ""]
    if not diff or not diff.get("previous_available"):
        return lines + ["No previous run to compare with.", ""]
    if diff.get("previous_execution_id"):
        lines.append(f"Compared with execution `{diff['previous_execution_id']}`.")
        lines.append("")
    if diff.get("changed"):
        lines += [f"- **{c['symbol']}**: {c['from']} → {c['to']}" for c in diff["changed"]]
    else:
        lines.append("- No action changed.")
    for move in diff.get("strength_moves", []):
        lines.append(f"- {move['symbol']} strength {move['from']:.2f} → {move['to']:.2f} ({move['delta']:+.2f})")
    for key, label in (("new", "New symbols"), ("dropped", "Dropped symbols"), ("unchanged", "Same action")):
        if diff.get(key):
            lines.append(f"- {label}: {', '.join(diff[key])}")
    return lines + [""]


def _failed_section(failed: Mapping[str, str]) -> list[str]:
    lines = ["## Failed symbols", ""]
    lines += _table(["Symbol", "Reason"], [[s, r] for s, r in sorted(failed.items())])
    return lines + [""]


def run_report(
    *,
    workflow_id: str,
    execution_id: str,
    data_summary: dict,
    metrics: dict,
    backtest: dict,
    signals: list[Signal],
    diff: dict | None,
    failed_symbols: dict[str, str] | None = None,
    folds: list[dict] | None = None,
    per_symbol: dict[str, dict] | None = None,
) -> str:
    """Markdown report: Signals, Changes since the previous run, Model, Backtest, Data, Failed symbols.

    Under the title, before anything else: whether the data is replayed sample data, and
    the model's out-of-sample verdict against its baselines (overall and which symbols' own
    models fell short).
    """
    lines = [f"# Signals run `{execution_id}`", ""]
    lines += _replay_notice(data_summary)
    lines += _verdict_notice(metrics, per_symbol or {})
    lines += [f"Workflow `{workflow_id}`, execution `{execution_id}`.", ""]
    lines += _signals_section(signals)
    lines += _diff_section(diff)
    lines += _model_section(metrics, folds, per_symbol or {})
    lines += _backtest_section(backtest)
    lines += _data_section(data_summary)
    if failed_symbols:
        lines += _failed_section(failed_symbols)
    return "\n".join(lines).rstrip() + "\n"
