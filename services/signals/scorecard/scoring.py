"""How published signals turned out: forward returns, hits, a summary and return curves.

Pure arithmetic on plain values; the workflow fetches the signals and the closes.

- Forward return at horizon h: close(as_of + h sessions) / close(as_of) - 1, the
  sessions being the bars the provider has; null until that bar exists.
- A hit is a BUY followed by a positive return, or a SELL by a negative one. HOLDs are
  reported (count, mean return), never scored.
- One signal per symbol and session: of several runs as of the same date (a manual run
  and a backfill's), the latest published counts.
- The curves follow the signals from each one's close to the next session's close,
  BUY long, SELL short, HOLD flat, a signal held until the symbol's next one and at
  most the longest horizon; next to them, buy-and-hold of the same symbol over the
  same days. ALL weighs the symbols equally each day.
"""

from __future__ import annotations

import bisect
import datetime
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean

from shared.scorecard import Curve, CurvePoint, ScoredSignal, SummaryRow

ACTIONS = ("BUY", "SELL", "HOLD")
DIRECTION = {"BUY": 1, "SELL": -1, "HOLD": 0}
DIGITS = 10  # returns rounded: enough for any comparison, small enough to travel inline


@dataclass(frozen=True)
class StoredSignal:
    execution_id: str
    symbol: str
    as_of: datetime.date
    action: str
    strength: float | None
    price: float | None
    published_at: str


@dataclass(frozen=True)
class Closes:
    """One symbol's closes by session, oldest first."""

    dates: tuple[datetime.date, ...]
    closes: tuple[float, ...]

    def index_of(self, day: datetime.date) -> int | None:
        i = bisect.bisect_left(self.dates, day)
        return i if i < len(self.dates) and self.dates[i] == day else None


@dataclass(frozen=True)
class Scores:
    signals: list[ScoredSignal]
    summary: list[SummaryRow]
    curves: list[Curve]
    duplicates_ignored: int
    not_yet_scorable: int


def latest_per_session(signals: Iterable[StoredSignal]) -> tuple[list[StoredSignal], int]:
    """One signal per (symbol, as_of): the one published last; and how many were dropped."""
    every = list(signals)
    kept: dict[tuple[str, datetime.date], StoredSignal] = {}
    for signal in sorted(every, key=lambda s: (s.published_at, s.execution_id)):
        kept[(signal.symbol, signal.as_of)] = signal
    return sorted(kept.values(), key=lambda s: (s.as_of, s.symbol)), len(every) - len(kept)


def forward_returns(closes: Closes, as_of: datetime.date, horizons: Sequence[int]) -> dict[int, float | None]:
    start = closes.index_of(as_of)
    returns: dict[int, float | None] = {}
    for horizon in horizons:
        later = None if start is None else start + horizon
        if later is None or later >= len(closes.closes):
            returns[horizon] = None
        else:
            returns[horizon] = round(closes.closes[later] / closes.closes[start] - 1, DIGITS)
    return returns


def is_hit(action: str, forward: float | None) -> bool | None:
    if forward is None or action == "HOLD":
        return None
    return forward > 0 if action == "BUY" else forward < 0


def score(signals: Iterable[StoredSignal], closes: Mapping[str, Closes], horizons: Sequence[int]) -> Scores:
    """Signals of symbols without closes are left out (the caller says why)."""
    kept, duplicates = latest_per_session(s for s in signals if s.symbol in closes)
    scored = []
    for signal in kept:
        returns = forward_returns(closes[signal.symbol], signal.as_of, horizons)
        scored.append(ScoredSignal(
            execution_id=signal.execution_id, symbol=signal.symbol, as_of=signal.as_of.isoformat(),
            action=signal.action, strength=signal.strength, price=signal.price,
            forward_returns={str(h): r for h, r in returns.items()},
            hits={str(h): is_hit(signal.action, r) for h, r in returns.items()},
        ))
    return Scores(
        signals=scored,
        summary=summarize(scored, horizons),
        curves=curves(kept, closes, max(horizons)),
        duplicates_ignored=duplicates,
        not_yet_scorable=sum(any(r is None for r in s.forward_returns.values()) for s in scored),
    )


def summarize(scored: Sequence[ScoredSignal], horizons: Sequence[int]) -> list[SummaryRow]:
    groups: dict[tuple[str, str], list[ScoredSignal]] = defaultdict(list)
    for signal in scored:
        groups[(signal.symbol, signal.action)].append(signal)
    rows = []
    for (symbol, action), group in sorted(groups.items(), key=lambda g: (g[0][0], ACTIONS.index(g[0][1]))):
        for horizon in horizons:
            known = [s for s in group if s.forward_returns[str(horizon)] is not None]
            returns = [s.forward_returns[str(horizon)] for s in known]
            scored_action = action != "HOLD" and bool(known)
            rows.append(SummaryRow(
                symbol=symbol, action=action, horizon=horizon, count=len(known), pending=len(group) - len(known),
                hit_rate=(round(sum(bool(s.hits[str(horizon)]) for s in known) / len(known), DIGITS)
                          if scored_action else None),
                mean_return=round(fmean(returns), DIGITS) if returns else None,
                mean_signed_return=(round(fmean(DIRECTION[action] * r for r in returns), DIGITS)
                                    if scored_action else None),
            ))
    return rows


def _daily_legs(signals: Sequence[StoredSignal], closes: Closes, hold: int) -> dict[datetime.date, tuple[float, float]]:
    """Per session after the first signal: (the signals' return that day, buy-and-hold's)."""
    starts = sorted((i, s) for s in signals if (i := closes.index_of(s.as_of)) is not None)
    if not starts:
        return {}
    first, last = starts[0][0], min(starts[-1][0] + hold, len(closes.closes) - 1)
    legs, position, held, k = {}, 0, 0, 0
    for day in range(first, last):
        while k < len(starts) and starts[k][0] == day:
            position, held = DIRECTION[starts[k][1].action], 0
            k += 1
        change = closes.closes[day + 1] / closes.closes[day] - 1
        legs[closes.dates[day + 1]] = ((position if held < hold else 0) * change, change)
        held += 1
    return legs


def _compounded(name: str, start: datetime.date, legs: Mapping[datetime.date, tuple[float, float]]) -> Curve:
    points = [CurvePoint(date=start.isoformat(), signals=0.0, buy_and_hold=0.0)]
    signals = hold = 1.0
    for day in sorted(legs):
        follow, buy = legs[day]
        signals, hold = signals * (1 + follow), hold * (1 + buy)
        points.append(CurvePoint(date=day.isoformat(), signals=round(signals - 1, DIGITS),
                                 buy_and_hold=round(hold - 1, DIGITS)))
    return Curve(symbol=name, points=points)


def curves(kept: Sequence[StoredSignal], closes: Mapping[str, Closes], hold: int) -> list[Curve]:
    by_symbol: dict[str, list[StoredSignal]] = defaultdict(list)
    for signal in kept:
        by_symbol[signal.symbol].append(signal)
    result, every_leg = [], defaultdict(list)
    starts = []
    for symbol in sorted(by_symbol):
        legs = _daily_legs(by_symbol[symbol], closes[symbol], hold)
        if not legs:
            continue
        start = min(s.as_of for s in by_symbol[symbol] if closes[symbol].index_of(s.as_of) is not None)
        starts.append(start)
        result.append(_compounded(symbol, start, legs))
        for day, leg in legs.items():
            every_leg[day].append(leg)
    if len(result) > 1:
        average = {day: (fmean(l[0] for l in legs), fmean(l[1] for l in legs)) for day, legs in every_leg.items()}
        result.append(_compounded("ALL", min(starts), average))
    return result
