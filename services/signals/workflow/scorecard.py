"""`<workflow>.scorecard`: how the signals a workflow published turned out.

collect_signals -> fetch_prices -> score_signals -> publish_scorecard. The signals are
read from the artifacts service, the prices through the same market data provider the
workflow uses; the scorecard is one artifact of kind `scorecard` (the shape in
`shared/scorecard.py`), with its summary as a table next to it.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass

import pandas as pd

from services.signals.market_data.models import BarSeries, MarketDataError
from services.signals.scorecard.scoring import Closes, Scores, StoredSignal, score
from services.signals.scorecard.stored_signals import StoredSignalsUnavailable
from services.signals.workflow.runner import Step, StepContext, Workflow
from shared.events import MAX_INLINE_PAYLOAD_BYTES
from shared.scorecard import HORIZONS, SCORECARD_KIND, Labels, Scorecard, scorecard_workflow_id

# The scorecard travels inline up to well inside the event's payload bound (which counts
# the JSON with spaces); a larger one goes to the store, the same JSON.
SCORECARD_INLINE_BYTES = MAX_INLINE_PAYLOAD_BYTES * 3 // 4
# Calendar days of bars before the first signal: its own close, with room for holidays.
LEAD_DAYS = 10
COSTS = (
    "Returns ignore trading costs, slippage, dividends and taxes, and come from unadjusted closes: "
    "a split inside a horizon shows as a price move."
)
SUMMARY_DESCRIPTIONS = {
    "symbol": "Ticker symbol.",
    "action": "The signal's action.",
    "horizon": "Sessions after the signal's close.",
    "count": "Signals whose return at this horizon is known.",
    "pending": "Signals whose return at this horizon is not known yet.",
    "hit_rate": "Share of BUYs followed by a rise and SELLs by a fall; HOLDs are not scored.",
    "mean_return": "Mean forward return.",
    "mean_signed_return": "Mean return of following the signal: BUY long, SELL short.",
}


class NoSignalsError(RuntimeError):
    """The workflow has published no signal yet: there is nothing to score."""


@dataclass(frozen=True)
class Collected:
    signals: list[StoredSignal]
    artifacts: int


@dataclass(frozen=True)
class Priced:
    collected: Collected
    series: dict[str, BarSeries]
    failed: dict[str, str]


def scorecard_workflow(workflow_id: str) -> Workflow:
    """The scorecard workflow of `workflow_id`'s signals."""

    async def collect_signals(ctx: StepContext, _: None) -> Collected:
        lookup = ctx.resources.stored_signals
        if lookup is None:
            raise RuntimeError("this signals service cannot read stored signals (no artifacts API configured)")
        try:
            signals, artifacts = await lookup(workflow_id=workflow_id)
        except StoredSignalsUnavailable as exc:
            raise RuntimeError(f"the stored signals of {workflow_id} could not be read: {exc}") from None
        if not signals:
            raise NoSignalsError(f"{workflow_id} has published no signal yet: run it, or backfill it, first")
        symbols = sorted({s.symbol for s in signals})
        await ctx.log.info(
            f"{len(signals)} signals of {workflow_id} in {artifacts} runs: {', '.join(symbols)}, "
            f"as of {min(s.as_of for s in signals)} .. {max(s.as_of for s in signals)}",
            signals=len(signals), runs=artifacts, symbols=symbols,
        )
        return Collected(signals, artifacts)

    return Workflow(
        workflow_id=scorecard_workflow_id(workflow_id),
        steps=(
            Step("collect_signals", collect_signals),
            Step("fetch_prices", fetch_prices),
            Step("score_signals", score_signals),
            Step("publish_scorecard", lambda ctx, scored: publish_scorecard(ctx, scored, workflow_id)),
        ),
    )


async def fetch_prices(ctx: StepContext, collected: Collected) -> Priced:
    """Each symbol's bars from its first signal to the latest the provider has, in one request."""
    provider = ctx.resources.provider
    first = min(s.as_of for s in collected.signals)
    days = (datetime.date.today() - first).days + LEAD_DAYS
    symbols = sorted({s.symbol for s in collected.signals})
    qualified = await provider.qualify(symbols)
    series: dict[str, BarSeries] = {}
    failed: dict[str, str] = {}
    for symbol in symbols:
        instrument = qualified.get(symbol) or MarketDataError(symbol, "the provider gave no answer for this symbol")
        try:
            if isinstance(instrument, MarketDataError):
                raise instrument
            series[symbol] = await provider.daily_bars(instrument, days=days)
        except MarketDataError as exc:
            failed[symbol] = exc.message + (f" (code {exc.code})" if exc.code is not None else "")
            ctx.item_failed(symbol, f"no prices to score its signals: {failed[symbol]}", code=exc.code)
            await ctx.log.warning(f"{symbol}: its signals are not scored: {failed[symbol]}", symbol=symbol,
                                  code=exc.code)
            continue
        await ctx.log.info(
            f"{symbol}: {len(series[symbol].bars)} daily bars {series[symbol].first_date} .. "
            f"{series[symbol].last_date}", symbol=symbol, source=series[symbol].source,
        )
    if not series:
        raise RuntimeError("no prices for any symbol: " + "; ".join(f"{s}: {why}" for s, why in failed.items()))
    return Priced(collected, series, failed)


def closes_of(series: BarSeries) -> Closes:
    return Closes(dates=tuple(b.date for b in series.bars), closes=tuple(b.close for b in series.bars))


async def score_signals(ctx: StepContext, priced: Priced) -> tuple[Priced, Scores]:
    closes = {symbol: closes_of(s) for symbol, s in priced.series.items()}
    scores = await asyncio.to_thread(score, priced.collected.signals, closes, HORIZONS)
    await ctx.log.info(
        f"scored {len(scores.signals)} signals at {', '.join(map(str, HORIZONS))} sessions; "
        f"{scores.not_yet_scorable} not yet scorable at every horizon, {scores.duplicates_ignored} duplicates ignored",
        scored=len(scores.signals), not_yet_scorable=scores.not_yet_scorable,
        duplicates_ignored=scores.duplicates_ignored,
    )
    return priced, scores


def labels_of(series: dict[str, BarSeries], not_yet_scorable: int) -> Labels:
    sources = sorted({s.source for s in series.values()})
    replayed = any(s.replayed for s in series.values())
    delayed = any(s.delayed for s in series.values())
    where = ", ".join(sources)
    if replayed:
        data = f"replayed historical sample data ({where}), not today's market"
    else:
        data = f"{where}, {'delayed' if delayed else 'live'} data"
    return Labels(data=data, replayed=replayed, delayed=delayed, costs=COSTS, not_yet_scorable=not_yet_scorable)


async def publish_scorecard(ctx: StepContext, scored: tuple[Priced, Scores], workflow_id: str) -> dict:
    priced, scores = scored
    as_ofs = [s.as_of for s in scores.signals]
    scorecard = Scorecard(
        workflow_id=workflow_id,
        horizons=list(HORIZONS),
        signals=scores.signals,
        summary=scores.summary,
        curves=scores.curves,
        labels=labels_of(priced.series, scores.not_yet_scorable),
        first_as_of=min(as_ofs, default=None),
        last_as_of=max(as_ofs, default=None),
        prices_until=max(s.last_date for s in priced.series.values()).isoformat(),
        duplicates_ignored=scores.duplicates_ignored,
    )
    payload = {**scorecard.model_dump(mode="json"), "unpriced_symbols": priced.failed}
    summary = {
        "scores": workflow_id,
        "signals": len(scores.signals),
        "not_yet_scorable": scores.not_yet_scorable,
        "first_as_of": scorecard.first_as_of,
        "last_as_of": scorecard.last_as_of,
        "prices_until": scorecard.prices_until,
    }
    await ctx.artifacts.json("scorecard", SCORECARD_KIND, payload, metadata=summary,
                             inline_max_bytes=SCORECARD_INLINE_BYTES)
    await ctx.artifacts.table(
        "scorecard_summary", "metrics",
        pd.DataFrame([row.model_dump() for row in scores.summary], columns=list(SUMMARY_DESCRIPTIONS)),
        descriptions=SUMMARY_DESCRIPTIONS,
        metadata={**summary, "labels": scorecard.labels.model_dump()},
    )
    return summary
