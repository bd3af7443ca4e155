"""`ibkr_trading_signal_workflow`: fetch_market_data -> compute_features ->
generate_signals -> publish_signals.

The steps do the I/O (provider, artifacts, events) and hand the arithmetic to
`services.signals.analytics`, run in worker threads, and the model fitting in the model
worker process (model_worker.py), so that a long fit never stalls the event loop (and
with it the Kafka consumer's heartbeats) and scikit-learn never stays in the service.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from services.signals.analytics.backtest import backtest_signals
from services.signals.analytics.charts import CHART_BARS, position_markers, price_chart
from services.signals.analytics.diff import diff_signals
from services.signals.analytics.features import FEATURE_DESCRIPTIONS, MODEL_FEATURES, compute_features
from services.signals.analytics.model import WalkForwardResult, serialize_model, walk_forward
from services.signals.analytics.report import run_report
from services.signals.analytics.signals import Signal, decide_signals, signals_payload
from services.signals.market_data.models import BarSeries, Instrument, MarketDataError
from services.signals.workflow.artifacts import CSV, MARKDOWN, OCTET_STREAM, SVG
from services.signals.workflow.model_worker import MODEL_WORKER
from services.signals.workflow.previous_signals import PreviousSignalsUnavailable
from services.signals.workflow.runner import Step, StepContext, Workflow
from shared.api_models import SIGNALS_DIFF_KIND, SignalsDiff
from shared.events import SignalGenerated

WORKFLOW_ID = "ibkr_trading_signal_workflow"
# Rows of a table artifact that travel inline; the full table is the CSV next to it.
INLINE_TABLE_ROWS = 60

BAR_DESCRIPTIONS = {
    "symbol": "Ticker symbol.",
    "date": "Trading day of the bar (exchange-local).",
    "open": "Opening price.",
    "high": "Highest price of the day.",
    "low": "Lowest price of the day.",
    "close": "Closing price.",
    "volume": "Shares traded.",
}
SUMMARY_DESCRIPTIONS = {
    "symbol": "Ticker symbol.",
    "first_date": "Date of the first bar fetched.",
    "last_date": "Date of the last bar fetched (the signal's as-of date).",
    "bars": "Number of daily bars fetched.",
    "last_close": "Close of the last bar.",
    "source": "Where the bars came from.",
    "delayed": "True when the provider served delayed instead of live data.",
    "replayed": "True when the bars are historical data replayed from a file.",
}
FOLD_DESCRIPTIONS = {
    "symbol": "Symbol whose own model the fold trains and tests.",
    "fold": "Walk-forward fold number of the symbol (test windows in date order).",
    "train_start": "First date of the fold's training rows.",
    "train_end": "Last date of the fold's training rows.",
    "train_rows": "Training rows (days of the symbol) of the fold.",
    "test_start": "First date the fold predicts.",
    "test_end": "Last date the fold predicts.",
    "n": "Out-of-sample predictions of the fold.",
    "accuracy": "Share of the fold's predictions whose direction was right.",
    "precision": "Share of predicted-up days that did close higher.",
    "hit_rate": "Accuracy on the decisive predictions only.",
}


class NoMarketDataError(RuntimeError):
    """Not one symbol of the run could be qualified and fetched."""


@dataclass(frozen=True)
class MarketData:
    series: dict[str, BarSeries]
    frames: dict[str, pd.DataFrame]
    failed: dict[str, str]
    summary: dict[str, Any]


@dataclass(frozen=True)
class FeatureSet:
    market: MarketData
    features: dict[str, pd.DataFrame]


@dataclass(frozen=True)
class SignalSet:
    features: FeatureSet
    result: WalkForwardResult
    backtest: dict[str, Any]
    signals: list[Signal]


def bars_frame(series: BarSeries) -> pd.DataFrame:
    """The analytics' input shape: DatetimeIndex `date`, float open/high/low/close/volume."""
    return pd.DataFrame(
        {
            "open": [b.open for b in series.bars],
            "high": [b.high for b in series.bars],
            "low": [b.low for b in series.bars],
            "close": [b.close for b in series.bars],
            "volume": [b.volume for b in series.bars],
        },
        index=pd.DatetimeIndex([pd.Timestamp(b.date) for b in series.bars], name="date"),
        dtype=float,
    )


def _stacked(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One long table `symbol, date, ...` of per-symbol frames, by symbol then date."""
    parts = [frame.reset_index().assign(symbol=symbol) for symbol, frame in sorted(frames.items())]
    table = pd.concat(parts, ignore_index=True)
    return table[["symbol", *[c for c in table.columns if c != "symbol"]]]


def _latest_rows(table: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The last rows of each symbol, `limit` rows in all."""
    per_symbol = max(1, limit // max(1, table["symbol"].nunique()))
    return table.groupby("symbol", sort=True).tail(per_symbol).reset_index(drop=True)


def _error_text(error: MarketDataError) -> str:
    return error.message + (f" (code {error.code})" if error.code is not None else "")


# --- fetch_market_data ---------------------------------------------------------------


async def fetch_market_data(ctx: StepContext, _: None) -> MarketData:
    MODEL_WORKER.start()  # its imports overlap the fetch; generate_signals fits there
    provider = ctx.resources.provider
    qualified = await provider.qualify(ctx.symbols)
    series: dict[str, BarSeries] = {}
    failed: dict[str, str] = {}
    for symbol in ctx.symbols:
        instrument = qualified.get(symbol) or MarketDataError(symbol, "the provider gave no answer for this symbol")
        try:
            if isinstance(instrument, MarketDataError):
                raise instrument
            series[symbol] = await _fetch(ctx, instrument)
        except MarketDataError as exc:
            failed[symbol] = _error_text(exc)
            stage = "qualify" if isinstance(instrument, MarketDataError) else "daily_bars"
            ctx.item_failed(symbol, failed[symbol], code=exc.code)
            await ctx.log.warning(
                f"{symbol} skipped: {failed[symbol]}",
                symbol=symbol,
                stage=stage,
                code=exc.code,
                meaning=exc.message,
                provider=provider.name,
            )
    if not series:
        raise NoMarketDataError(
            "no market data for any symbol: " + "; ".join(f"{s}: {reason}" for s, reason in failed.items())
        )

    frames = {symbol: bars_frame(s) for symbol, s in series.items()}
    summary = _data_summary(series, failed, provider_name=provider.name, days=ctx.resources.history_days)
    bars_table = _stacked(frames)
    await ctx.artifacts.content(
        "market_data",
        "dataset",
        bars_table.to_csv(index=False, date_format="%Y-%m-%d").encode(),
        CSV,
        metadata={
            **summary,
            **({"as_of": ctx.as_of.isoformat()} if ctx.as_of else {}),
            "columns": [{"name": c, "description": BAR_DESCRIPTIONS[c]} for c in bars_table.columns],
        },
    )
    await ctx.artifacts.table(
        "market_data_summary",
        "dataset",
        pd.DataFrame(
            [
                {
                    "symbol": symbol,
                    "first_date": s.first_date,
                    "last_date": s.last_date,
                    "bars": len(s.bars),
                    "last_close": s.bars[-1].close,
                    "source": s.source,
                    "delayed": s.delayed,
                    "replayed": s.replayed,
                }
                for symbol, s in sorted(series.items())
            ]
        ),
        descriptions=SUMMARY_DESCRIPTIONS,
        metadata={**summary, "full_table": "market_data"},
    )
    return MarketData(series=series, frames=frames, failed=failed, summary=summary)


async def _fetch(ctx: StepContext, instrument: Instrument) -> BarSeries:
    series = await ctx.resources.provider.daily_bars(instrument, days=ctx.resources.history_days, end=ctx.as_of)
    if not series.bars:
        raise MarketDataError(instrument.symbol, "the provider returned no bars")
    if ctx.as_of is not None and series.last_date > ctx.as_of:
        # a provider that ignored `end` would leak what happened after the run's date into it
        raise MarketDataError(instrument.symbol, f"the provider returned bars after as_of {ctx.as_of}")
    await ctx.log.info(
        f"{instrument.symbol}: {len(series.bars)} daily bars {series.first_date} .. {series.last_date}",
        symbol=instrument.symbol,
        bars=len(series.bars),
        first_date=series.first_date,
        last_date=series.last_date,
        source=series.source,
        delayed=series.delayed,
        replayed=series.replayed,
    )
    return series


def _data_summary(
    series: dict[str, BarSeries], failed: dict[str, str], *, provider_name: str, days: int
) -> dict[str, Any]:
    all_series = list(series.values())
    return {
        "symbols": sorted(series),
        "start": min(s.first_date for s in all_series).isoformat(),
        "end": max(s.last_date for s in all_series).isoformat(),
        "bar_count": sum(len(s.bars) for s in all_series),
        "bars_per_symbol": {symbol: len(s.bars) for symbol, s in sorted(series.items())},
        "source": ", ".join(sorted({s.source for s in all_series})),
        "provider": provider_name,
        "delayed": any(s.delayed for s in all_series),
        "replayed": any(s.replayed for s in all_series),
        "history_days": days,
        "failed_symbols": failed,
    }


# --- compute_features ----------------------------------------------------------------


async def compute_features_step(ctx: StepContext, market: MarketData) -> FeatureSet:
    features = await asyncio.to_thread(
        lambda: {symbol: compute_features(frame) for symbol, frame in market.frames.items()}
    )
    table = _stacked(features)
    descriptions = {"symbol": BAR_DESCRIPTIONS["symbol"], "date": BAR_DESCRIPTIONS["date"], **FEATURE_DESCRIPTIONS}
    full = await ctx.artifacts.content(
        "features.csv",
        "features",
        table.to_csv(index=False, date_format="%Y-%m-%d").encode(),
        CSV,
        metadata={
            "rows": len(table),
            "symbols": sorted(features),
            "columns": [{"name": c, "description": descriptions[c]} for c in table.columns],
        },
    )
    preview = _latest_rows(table, INLINE_TABLE_ROWS)
    await ctx.artifacts.table(
        "features",
        "features",
        preview,
        descriptions=descriptions,
        metadata={
            "rows_total": len(table),
            "rows_shown": len(preview),
            "shown": "the latest rows of each symbol",
            "full_table": full.name,
            "feature_names": list(FEATURE_DESCRIPTIONS),
            "model_features": list(MODEL_FEATURES),
            "symbols": sorted(features),
        },
    )
    await ctx.log.info(
        f"computed {len(FEATURE_DESCRIPTIONS)} features for {len(features)} symbols",
        rows=len(table),
        features=list(FEATURE_DESCRIPTIONS),
    )
    return FeatureSet(market=market, features=features)


# --- generate_signals ----------------------------------------------------------------


def _model_and_signals(feature_set: FeatureSet) -> tuple[WalkForwardResult, dict, list[Signal], bytes]:
    """Runs in the model worker. The fitted estimators go back only inside the joblib
    bytes: as objects they would bring scikit-learn into the service's process."""
    bars = feature_set.market.frames
    result = walk_forward(feature_set.features, bars)
    backtest = backtest_signals(result, bars)
    signals = decide_signals(result, feature_set.features, bars)
    return replace(result, models={}), backtest, signals, serialize_model(result)


async def generate_signals(ctx: StepContext, feature_set: FeatureSet) -> SignalSet:
    result, backtest, signals, model_bytes = await MODEL_WORKER.run(_model_and_signals, feature_set)
    metrics = result.metrics
    await ctx.log.info(
        f"walk-forward of {len(result.per_symbol)} per-symbol models over {result.training_window['rows']} rows, "
        f"{metrics['n_folds']} folds: accuracy {metrics['accuracy']:.1%} vs baseline "
        f"{metrics['baseline_accuracy']:.1%}. {metrics['verdict_text']}",
        training_window=result.training_window,
        metrics={k: v for k, v in metrics.items() if k != "definitions"},
        per_symbol_verdicts={symbol: m["verdict"] for symbol, m in result.per_symbol.items()},
        unscored=result.unscored,
    )
    model = await ctx.artifacts.json(
        "model",
        "model",
        {**result.summary(), "backtest": backtest},
        metadata={
            "model_type": result.model_type,
            "scope": result.params["scope"],
            "verdict": metrics["verdict"],
            "training_window": result.training_window,
            "accuracy": metrics["accuracy"],
            "baseline_accuracy": metrics["baseline_accuracy"],
            "backtest_total_return": backtest["pooled"]["total_return"],
            "serialized_model": "model.joblib",
        },
    )
    await ctx.artifacts.content(
        "model.joblib",
        "model",
        model_bytes,
        OCTET_STREAM,
        metadata={
            "format": "joblib",
            "load": "joblib.load(file) -> {estimators: {symbol: estimator}, feature_names, model_type, scope, "
            "training_window, sklearn_version}",
            "model_type": result.model_type,
            "feature_names": result.feature_names,
            "training_window": result.training_window,
            "described_by": model.name,
        },
    )
    await ctx.artifacts.table(
        "walk_forward_folds",
        "metrics",
        pd.DataFrame(result.folds, columns=list(FOLD_DESCRIPTIONS)),
        descriptions=FOLD_DESCRIPTIONS,
        metadata={
            key: metrics[key]
            for key in ("accuracy", "precision", "hit_rate", "baseline_accuracy", "up_rate", "verdict", "verdict_text")
        },
    )
    payload = signals_payload(signals)
    await ctx.artifacts.json(
        "signals", "signals", payload, metadata={"counts": payload["counts"], "as_of": payload["as_of"]}
    )
    for signal in signals:
        await ctx.log.info(
            f"{signal.symbol}: {signal.action} (strength {signal.strength:.2f}) at {signal.last_price:g} "
            f"as of {signal.as_of}",
            symbol=signal.symbol,
            action=signal.action,
            strength=signal.strength,
            reasons=signal.reasons,
            prob_up=signal.prob_up,
        )
    return SignalSet(features=feature_set, result=result, backtest=backtest, signals=signals)


# --- publish_signals -----------------------------------------------------------------


async def publish_signals(ctx: StepContext, signal_set: SignalSet) -> dict[str, Any]:
    market = signal_set.features.market
    result = signal_set.result
    for signal in signal_set.signals:
        series = market.series[signal.symbol]
        await ctx.emitter.emit(
            SignalGenerated,
            f"signal:{signal.symbol}",
            step_name=ctx.step_name,
            symbol=signal.symbol,
            action=signal.action,
            strength=signal.strength,
            price=signal.last_price,
            as_of=signal.as_of,
            reasons=signal.reasons,
            model=result.model_type,
            data_source=series.source,
            delayed=series.delayed,
        )
    await ctx.log.info(
        f"published {len(signal_set.signals)} signals",
        signals={s.symbol: s.action for s in signal_set.signals},
    )

    for signal in signal_set.signals:
        svg = await asyncio.to_thread(_chart, signal_set, signal)
        await ctx.artifacts.content(
            f"chart_{signal.symbol}",
            "chart",
            svg,
            SVG,
            metadata={
                "symbol": signal.symbol,
                "action": signal.action,
                "strength": signal.strength,
                "as_of": signal.as_of,
                "bars_shown": min(CHART_BARS, len(market.frames[signal.symbol])),
                "renderer": "image",
            },
        )

    payload = signals_payload(signal_set.signals)
    previous = await _previous_signals(ctx)
    diff = diff_signals(
        payload,
        previous.payload if previous else None,
        previous_execution_id=previous.execution_id if previous else None,
    )
    if previous is not None:
        # the one answer to "what changed since the previous run": the API serves this artifact
        await ctx.artifacts.json(
            "signals_diff", SIGNALS_DIFF_KIND, SignalsDiff.model_validate(diff).model_dump(mode="json", by_alias=True),
            metadata={"previous_execution_id": previous.execution_id},
        )
    report = run_report(
        workflow_id=ctx.workflow_id,
        execution_id=ctx.execution_id,
        data_summary={k: v for k, v in market.summary.items() if k != "failed_symbols"},
        metrics={k: v for k, v in result.metrics.items() if k != "definitions"},
        backtest=signal_set.backtest,
        signals=signal_set.signals,
        diff=diff,
        failed_symbols=market.failed or None,
        folds=result.folds,
        per_symbol=result.per_symbol,
    )
    await ctx.artifacts.content(
        "report",
        "report",
        report.encode(),
        MARKDOWN,
        metadata={
            "renderer": "markdown",
            "previous_execution_id": diff["previous_execution_id"],
            "changed": diff["changed"],
        },
    )
    return {
        "symbols": sorted(market.series),
        "signals": {s.symbol: s.action for s in signal_set.signals},
        "failed_symbols": market.failed,
        "as_of": payload["as_of"],
    }


def _chart(signal_set: SignalSet, signal: Signal) -> bytes:
    symbol = signal.symbol
    predictions = signal_set.result.predictions
    markers = None
    if symbol in predictions.index.get_level_values("symbol"):
        markers = position_markers(predictions.xs(symbol, level="symbol")["predicted_up"])
    return price_chart(
        symbol,
        signal_set.features.market.frames[symbol],
        signal_set.features.features[symbol],
        signal,
        markers=markers,
    )


async def _previous_signals(ctx: StepContext):
    try:
        previous = await ctx.resources.previous_signals(workflow_id=ctx.workflow_id, execution_id=ctx.execution_id)
    except PreviousSignalsUnavailable as exc:
        await ctx.log.warning(f"no previous run available: {exc}", reason=str(exc))
        return None
    if previous is None:
        await ctx.log.info("no previous run available: this is the first successful run of the workflow")
    else:
        await ctx.log.info(
            f"comparing with the previous run {previous.execution_id}", previous_execution_id=previous.execution_id
        )
    return previous


WORKFLOW = Workflow(
    workflow_id=WORKFLOW_ID,
    steps=(
        Step("fetch_market_data", fetch_market_data),
        Step("compute_features", compute_features_step),
        Step("generate_signals", generate_signals),
        Step("publish_signals", publish_signals),
    ),
)
WORKFLOWS = {WORKFLOW.workflow_id: WORKFLOW}

