"""Per-symbol SVG chart: close with its moving averages and signal markers, RSI below.

Written directly as SVG from the chart's data: a few milliseconds per chart instead of
the seconds a raster backend spends laying out and rasterizing, and nothing heavy to
import. The result holds no script and no external reference; every text is escaped,
so it is safe both as an `<img>` and inline in a page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from xml.sax.saxutils import escape, quoteattr

import pandas as pd

from services.signals.analytics.signals import RSI_OVERBOUGHT, RSI_OVERSOLD, Signal

CHART_BARS = 250
WIDTH, HEIGHT = 1100, 650
# Plot areas (left, top, right, bottom) of the price panel and the RSI panel below it.
PRICE_BOX = (70, 40, 1080, 455)
RSI_BOX = (70, 480, 1080, 615)
ACTION_STYLE = {
    "BUY": {"marker": "^", "color": "#1a9641"},
    "SELL": {"marker": "v", "color": "#d7191c"},
    "HOLD": {"marker": "o", "color": "#7f7f7f"},
}
LINES = (("close", "#222222", 1.2, "close"), ("sma_20", "#2b83ba", 1.0, "SMA 20"), ("sma_50", "#fdae61", 1.0, "SMA 50"))


def position_markers(positions: pd.Series) -> pd.Series:
    """BUY where a position goes up (e.g. flat -> long), SELL where it goes down; for `markers`."""
    change = positions.astype(float).diff().fillna(positions.astype(float))
    return pd.Series("BUY", index=change.index[change > 0]).combine_first(
        pd.Series("SELL", index=change.index[change < 0])
    ).sort_index()


def _normalized_markers(markers: pd.Series) -> pd.Series:
    names = {1: "BUY", -1: "SELL", 0: "HOLD", True: "BUY", False: "SELL"}
    return markers.map(lambda v: v.upper() if isinstance(v, str) else names.get(v)).dropna()


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round values (1, 2, 2.5 or 5 times a power of ten apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


class _Scale:
    def __init__(self, box: tuple[int, int, int, int], n: int, low: float, high: float) -> None:
        self.left, self.top, self.right, self.bottom = box
        self.n, self.low, self.high = n, low, high

    def x(self, i: float) -> float:
        return self.left + (self.right - self.left) * (i / max(1, self.n - 1))

    def y(self, value: float) -> float:
        return self.bottom - (self.bottom - self.top) * (value - self.low) / (self.high - self.low)


def _value_range(values: Iterable[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    return low - pad, high + pad


def _polyline(scale: _Scale, values: Sequence[float], color: str, width: float, dash: str = "") -> str:
    """One path of the finite runs of `values` (a NaN, e.g. a warm-up, breaks the line)."""
    parts, pen_down = [], False
    for i, value in enumerate(values):
        if not math.isfinite(value):
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{scale.x(i):.1f} {scale.y(value):.1f}")
        pen_down = True
    if not parts:
        return ""
    dashing = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<path d="{" ".join(parts)}" fill="none" stroke="{color}" stroke-width="{width}"{dashing}/>'


def _marker(x: float, y: float, action: str, size: float, *, outline: str = "none", opacity: float = 1.0) -> str:
    color = ACTION_STYLE[action]["color"]
    shape = ACTION_STYLE[action]["marker"]
    paint = f'fill="{color}" fill-opacity="{opacity}" stroke="{outline}"'
    if shape == "o":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size / 2:.1f}" {paint}/>'
    tip = -size / 2 if shape == "^" else size / 2
    points = f"{x:.1f},{y + tip:.1f} {x - size / 2:.1f},{y - tip:.1f} {x + size / 2:.1f},{y - tip:.1f}"
    return f'<polygon points="{points}" {paint}/>'


def _text(x: float, y: float, content: str, *, anchor: str = "start", size: int = 11, color: str = "#222",
          weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{color}" '
            f'font-weight="{weight}">{escape(content)}</text>')


def _y_axis(scale: _Scale, ticks: Iterable[float], label: str) -> list[str]:
    out = []
    for tick in ticks:
        y = scale.y(tick)
        out.append(f'<line x1="{scale.left}" x2="{scale.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#000" '
                   'stroke-opacity="0.12"/>')
        out.append(_text(scale.left - 6, y + 4, f"{tick:g}", anchor="end", size=10))
    middle = (scale.top + scale.bottom) / 2
    out.append(f'<text x="16" y="{middle:.1f}" transform="rotate(-90 16 {middle:.1f})" text-anchor="middle" '
               f'font-size="11" fill="#222">{escape(label)}</text>')
    return out


def _date_ticks(dates: pd.DatetimeIndex, scale: _Scale, count: int = 7) -> list[str]:
    out = []
    step = max(1, len(dates) // count)
    for i in range(0, len(dates), step):
        x = scale.x(i)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PRICE_BOX[1]}" y2="{RSI_BOX[3]}" stroke="#000" '
                   'stroke-opacity="0.08"/>')
        out.append(_text(x, RSI_BOX[3] + 16, dates[i].strftime("%Y-%m-%d"), anchor="middle", size=10))
    return out


def price_chart(
    symbol: str,
    bars: pd.DataFrame,
    features: pd.DataFrame,
    signal: Signal,
    *,
    markers: pd.Series | None = None,
    last_bars: int = CHART_BARS,
) -> bytes:
    """UTF-8 SVG of the last `last_bars` bars, WIDTH x HEIGHT pixels.

    `markers`: optional past signals, a Series indexed by date with "BUY"/"SELL"/"HOLD"
    (or +1/-1/0) values, e.g. position_markers() of the out-of-sample positions. The
    current signal is marked on the last bar.
    """
    close = bars["close"].astype(float).iloc[-last_bars:]
    shown = features.reindex(close.index)
    series = {"close": close.tolist(), **{name: shown[name].astype(float).tolist() for name in ("sma_20", "sma_50")}}
    low, high = _value_range(v for values in series.values() for v in values)
    price = _Scale(PRICE_BOX, len(close), low, high)
    rsi = _Scale(RSI_BOX, len(close), 0.0, 100.0)
    title = f"{symbol}: {signal.action} (strength {signal.strength:.2f}) as of {signal.as_of}"

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Arial, sans-serif" role="img" '
        f"aria-label={quoteattr(title)}>",
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        _text(WIDTH / 2, 24, title, anchor="middle", size=14),
        *_y_axis(price, nice_ticks(low, high), "price"),
        *_y_axis(rsi, (0, 50, 100), "RSI 14"),
        *_date_ticks(close.index, price),
    ]
    for name, color, width, _ in LINES:
        out.append(_polyline(price, series[name], color, width))

    if markers is not None and not markers.empty:
        positions = {date: i for i, date in enumerate(close.index)}
        for date, action in _normalized_markers(markers).items():
            if action in ("BUY", "SELL") and date in positions:
                i = positions[date]
                out.append(_marker(price.x(i), price.y(series["close"][i]), action, 8, opacity=0.6))

    last_x, last_y = price.x(len(close) - 1), price.y(series["close"][-1])
    color = ACTION_STYLE[signal.action]["color"]
    out.append(_marker(last_x, last_y, signal.action, 16, outline="#000"))
    out.append(_text(last_x - 10, last_y - 14, f"{signal.action} {signal.strength:.2f}", anchor="end",
                     color=color, weight="bold"))

    legend = [(label, color, None) for _, color, _, label in LINES]
    legend += [(f"past {a}", ACTION_STYLE[a]["color"], a) for a in ("BUY", "SELL")] if markers is not None else []
    for row, (label, color, action) in enumerate(legend):
        y = PRICE_BOX[1] + 14 + row * 15
        x = PRICE_BOX[0] + 10
        out.append(_marker(x + 8, y - 4, action, 8, opacity=0.6) if action else
                   f'<line x1="{x}" x2="{x + 16}" y1="{y - 4}" y2="{y - 4}" stroke="{color}" stroke-width="2"/>')
        out.append(_text(x + 22, y, label, size=10))

    rsi_values = shown["rsi_14"].astype(float).tolist()
    out.append(_polyline(rsi, rsi_values, "#5e3c99", 1.0))
    for level, level_color in ((RSI_OVERBOUGHT, "#d7191c"), (RSI_OVERSOLD, "#1a9641")):
        out.append(_polyline(rsi, [level] * len(close), level_color, 0.8, dash="4 3"))
    for box in (PRICE_BOX, RSI_BOX):
        left, top, right, bottom = box
        out.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" '
                   'stroke="#333" stroke-width="0.8"/>')
    out.append("</svg>")
    return "\n".join(out).encode()
