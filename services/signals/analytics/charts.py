"""Per-symbol PNG chart: close with its moving averages and signal markers, RSI below.

Drawn on a bare Figure with the Agg canvas: no pyplot state, safe to call from
worker threads, no display needed.
"""

from __future__ import annotations

import io

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from services.signals.analytics.signals import RSI_OVERBOUGHT, RSI_OVERSOLD, Signal

CHART_BARS = 250
ACTION_STYLE = {
    "BUY": {"marker": "^", "color": "#1a9641"},
    "SELL": {"marker": "v", "color": "#d7191c"},
    "HOLD": {"marker": "o", "color": "#7f7f7f"},
}


def position_markers(positions: pd.Series) -> pd.Series:
    """BUY where a position goes up (e.g. flat -> long), SELL where it goes down; for `markers`."""
    change = positions.astype(float).diff().fillna(positions.astype(float))
    return pd.Series("BUY", index=change.index[change > 0]).combine_first(
        pd.Series("SELL", index=change.index[change < 0])
    ).sort_index()


def _normalized_markers(markers: pd.Series) -> pd.Series:
    names = {1: "BUY", -1: "SELL", 0: "HOLD", True: "BUY", False: "SELL"}
    return markers.map(lambda v: v.upper() if isinstance(v, str) else names.get(v)).dropna()


def price_chart(
    symbol: str,
    bars: pd.DataFrame,
    features: pd.DataFrame,
    signal: Signal,
    *,
    markers: pd.Series | None = None,
    last_bars: int = CHART_BARS,
) -> bytes:
    """PNG bytes of the last `last_bars` bars.

    `markers`: optional past signals, a Series indexed by date with "BUY"/"SELL"/"HOLD"
    (or +1/-1/0) values, e.g. position_markers() of the out-of-sample positions. The
    current signal is marked on the last bar.
    """
    close = bars["close"].astype(float).iloc[-last_bars:]
    shown = features.reindex(close.index)

    fig = Figure(figsize=(11, 6.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    price_ax, rsi_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])

    price_ax.plot(close.index, close.to_numpy(), color="#222222", linewidth=1.2, label="close")
    price_ax.plot(shown.index, shown["sma_20"].to_numpy(), color="#2b83ba", linewidth=1.0, label="SMA 20")
    price_ax.plot(shown.index, shown["sma_50"].to_numpy(), color="#fdae61", linewidth=1.0, label="SMA 50")

    if markers is not None and not markers.empty:
        past = _normalized_markers(markers)
        past = past[past.index.isin(close.index)]
        for action in ("BUY", "SELL"):
            dates = past.index[past == action]
            if len(dates):
                style = ACTION_STYLE[action]
                price_ax.scatter(
                    dates, close.loc[dates].to_numpy(), marker=style["marker"], color=style["color"],
                    s=28, alpha=0.6, zorder=3, label=f"past {action}",
                )

    style = ACTION_STYLE[signal.action]
    last_date = close.index[-1]
    price_ax.scatter(
        [last_date], [close.iloc[-1]], marker=style["marker"], color=style["color"],
        s=160, edgecolors="black", zorder=4, label=f"{signal.action} {signal.strength:.2f}",
    )
    price_ax.annotate(
        f"{signal.action} {signal.strength:.2f}", (last_date, close.iloc[-1]),
        xytext=(-10, 14), textcoords="offset points", ha="right", color=style["color"], fontweight="bold",
    )
    price_ax.set_title(f"{symbol}: {signal.action} (strength {signal.strength:.2f}) as of {signal.as_of}")
    price_ax.set_ylabel("price")
    price_ax.grid(alpha=0.3)
    price_ax.legend(loc="upper left", fontsize=8)

    rsi_ax.plot(shown.index, shown["rsi_14"].to_numpy(), color="#5e3c99", linewidth=1.0)
    rsi_ax.axhline(RSI_OVERBOUGHT, color="#d7191c", linewidth=0.8, linestyle="--")
    rsi_ax.axhline(RSI_OVERSOLD, color="#1a9641", linewidth=0.8, linestyle="--")
    rsi_ax.set_ylim(0, 100)
    rsi_ax.set_ylabel("RSI 14")
    rsi_ax.grid(alpha=0.3)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
