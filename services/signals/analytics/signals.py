"""Turn the model's probabilities and the moving-average trend into actions.

score = 0.6 * model edge + 0.25 * trend + 0.15 * RSI extreme, each part in [-1, 1]:
  model edge  (P(up) - 0.5) / 0.15, clipped: a 65% probability is full conviction;
  trend       +1 when the 20-day average is above the 50-day, -1 below;
  RSI extreme -1 at or above 70 (overbought), +1 at or below 30 (oversold), else 0.
BUY when score >= 0.3 and the model is decisive upwards (P(up) >= 0.55), SELL when
score <= -0.3 and P(up) <= 0.45, HOLD otherwise; strength = |score| (for a HOLD, how
far it leans). Trend and RSI can confirm or veto the model, never act without it.
P(up) comes from the symbol's own model, and the first reason says how that model
fared against its baselines out of sample.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd

from services.signals.analytics.features import WARM_UP_BARS
from services.signals.analytics.model import DECISIVE_MARGIN, WalkForwardResult, best_baseline

Action = Literal["BUY", "SELL", "HOLD"]
ACTIONS: tuple[Action, ...] = ("BUY", "SELL", "HOLD")

MODEL_WEIGHT = 0.6
TREND_WEIGHT = 0.25
RSI_WEIGHT = 0.15
FULL_CONVICTION_EDGE = 0.15
ACTION_THRESHOLD = 0.3
RSI_OVERBOUGHT = 70.0
RSI_OVERSOLD = 30.0
CROSSOVER_LOOKBACK_BARS = 5


@dataclass(frozen=True)
class Signal:
    symbol: str
    action: Action
    strength: float
    last_price: float
    as_of: str
    reasons: list[str]
    prob_up: float | None = None
    score: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _days_ago(n: int) -> str:
    return "today" if n == 0 else ("1 day ago" if n == 1 else f"{n} days ago")


def _trend(features: pd.DataFrame) -> tuple[int, str]:
    spread = (features["sma_20"] - features["sma_50"]).dropna()
    if spread.empty or features.index[-1] != spread.index[-1]:
        return 0, "not enough bars for the 50-day average: trend unknown"
    side = np.sign(spread.to_numpy())
    vote = int(side[-1])
    if vote == 0:
        return 0, "20-day and 50-day averages are equal: no trend"
    recent = side[-(CROSSOVER_LOOKBACK_BARS + 1) :]
    flips = np.flatnonzero(recent[1:] != recent[:-1])
    direction = "above" if vote > 0 else "below"
    if flips.size:
        bars_ago = len(recent) - 2 - int(flips[-1])
        return vote, f"20-day average crossed {direction} the 50-day {_days_ago(bars_ago)}"
    trend = "uptrend" if vote > 0 else "downtrend"
    return vote, f"20-day average is {direction} the 50-day ({trend})"


def _rsi(value: float) -> tuple[int, str]:
    if math.isnan(value):
        return 0, "RSI not available yet"
    if value >= RSI_OVERBOUGHT:
        return -1, f"RSI {value:.0f}: overbought"
    if value <= RSI_OVERSOLD:
        return 1, f"RSI {value:.0f}: oversold"
    return 0, f"RSI {value:.0f}: neutral"


def _model_side(prob: float, margin: float) -> int:
    if prob >= 0.5 + margin:
        return 1
    if prob <= 0.5 - margin:
        return -1
    return 0


def _action(score: float, model_side: int, threshold: float) -> Action:
    if score >= threshold and model_side > 0:
        return "BUY"
    if score <= -threshold and model_side < 0:
        return "SELL"
    return "HOLD"


def _verdict(score: float, action: Action, model_side: int, trend_vote: int, margin: float, threshold: float) -> str:
    if model_side == 0:
        agreement = f"model is undecided (P(up) between {0.5 - margin:.0%} and {0.5 + margin:.0%})"
    elif trend_vote == 0:
        agreement = "trend is unknown"
    elif trend_vote == model_side:
        agreement = "model and trend agree"
    else:
        agreement = "model and trend disagree"
    if action == "HOLD":
        return f"{agreement}; combined score {score:+.2f}: HOLD"
    return f"{agreement}; combined score {score:+.2f} passes ±{threshold:.2f}: {action}"


def _model_reason(prob: float, metrics: dict) -> str:
    """The probability, and how the symbol's own model fared against its baselines out of sample."""
    reason = f"model gives {prob:.0%} chance of a higher close tomorrow"
    accuracy = metrics.get("accuracy")
    if accuracy is None:
        return reason
    track_record = f"walk-forward accuracy {accuracy:.1%}"
    best = best_baseline(metrics)
    if best is not None and metrics.get("verdict") in ("worse", "no_better"):
        name, value = best
        below = "below" if metrics["verdict"] == "worse" else "not clearly above"
        track_record += f", {below} the {name}'s {value:.1%}: no better than chance"
    elif best is not None and metrics.get("verdict") == "better":
        name, value = best
        track_record += f", above the {name}'s {value:.1%}"
    return f"{reason} ({track_record})"


def decide_signals(
    result: WalkForwardResult,
    features: dict[str, pd.DataFrame],
    bars: dict[str, pd.DataFrame],
    *,
    decisive_margin: float = DECISIVE_MARGIN,
    action_threshold: float = ACTION_THRESHOLD,
) -> list[Signal]:
    """One signal per symbol in `bars`, sorted by symbol; unscored symbols are HOLD with the reason.

    `decisive_margin`: how far from 0.5 P(up) must be for the model to back an action;
    `action_threshold`: the |score| an action needs (see the module docstring).
    """
    probabilities = result.latest_probabilities()
    signals = []
    for symbol in sorted(bars):
        symbol_bars = bars[symbol]
        last_price = float(symbol_bars["close"].iloc[-1])
        as_of = symbol_bars.index[-1].date().isoformat()
        prob = probabilities.get(symbol)
        frame = features.get(symbol)
        if prob is None or frame is None or frame.empty:
            signals.append(
                Signal(
                    symbol=symbol,
                    action="HOLD",
                    strength=0.0,
                    last_price=last_price,
                    as_of=as_of,
                    reasons=[
                        result.unscored.get(symbol)
                        or f"not enough history to score: the model needs {WARM_UP_BARS} bars with "
                        f"complete features, {len(symbol_bars)} bars available"
                    ],
                )
            )
            continue

        edge = float(np.clip((prob - 0.5) / FULL_CONVICTION_EDGE, -1.0, 1.0))
        trend_vote, trend_reason = _trend(frame)
        rsi_vote, rsi_reason = _rsi(float(frame["rsi_14"].iloc[-1]))
        score = MODEL_WEIGHT * edge + TREND_WEIGHT * trend_vote + RSI_WEIGHT * rsi_vote
        model_side = _model_side(prob, decisive_margin)
        action = _action(score, model_side, action_threshold)

        signals.append(
            Signal(
                symbol=symbol,
                action=action,
                strength=round(min(1.0, abs(score)), 4),
                last_price=last_price,
                as_of=as_of,
                reasons=[
                    _model_reason(prob, result.per_symbol.get(symbol, {})),
                    trend_reason,
                    rsi_reason,
                    _verdict(score, action, model_side, trend_vote, decisive_margin, action_threshold),
                ],
                prob_up=round(float(prob), 4),
                score=round(score, 4),
            )
        )
    return signals


def signals_payload(signals: list[Signal]) -> dict:
    """JSON-ready signals artifact: the signals, counts per action, and the latest as-of date."""
    counts = Counter(s.action for s in signals)
    return {
        "signals": [s.to_dict() for s in signals],
        "counts": {action: counts.get(action, 0) for action in ACTIONS},
        "as_of": max((s.as_of for s in signals), default=None),
    }
