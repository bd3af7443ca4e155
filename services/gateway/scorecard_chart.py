"""The scorecard's curves as inline SVG, drawn on the server: no script, nothing for the
page's Content-Security-Policy to refuse, and readable without JavaScript."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 420, 190
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 14, 30
SIGNALS_COLOUR = "#3b5bdb"
HOLD_COLOUR = "#8a93a6"
LABEL_GAP = 12


def percent(value: float) -> str:
    return f"{value * 100:+.1f}%"


def _scale(low: float, high: float, size: int, start: int, *, flip: bool) -> Callable[[float], float]:
    span = (high - low) or 1.0

    def at(value: float) -> float:
        share = (value - low) / span
        return round(start + (1 - share if flip else share) * size, 1)

    return at


def _polyline(xs: Sequence[float], ys: Sequence[float], colour: str, width: float, dash: str = "") -> str:
    points = " ".join(f"{x},{y}" for x, y in zip(xs, ys, strict=True))
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{width}" '
            f'stroke-linejoin="round"{dashed}/>')


def curve_svg(symbol: str, points: Sequence[tuple[str, float, float]]) -> Markup:
    """`points` are (date, following the signals, buy-and-hold), cumulative returns."""
    if len(points) < 2:
        return Markup('<p class="muted small">Not enough sessions to draw yet.</p>')
    follow = [p[1] for p in points]
    hold = [p[2] for p in points]
    low, high = min(0.0, *follow, *hold), max(0.0, *follow, *hold)
    x = _scale(0, len(points) - 1, WIDTH - LEFT - RIGHT, LEFT, flip=False)
    y = _scale(low, high, HEIGHT - TOP - BOTTOM, TOP, flip=True)
    xs = [x(i) for i in range(len(points))]
    title = (f"{symbol}: following the signals {percent(follow[-1])}, buy-and-hold {percent(hold[-1])}, "
             f"{points[0][0]} to {points[-1][0]}")
    parts = [
        f'<svg class="curve" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(0)}" y2="{y(0)}" stroke="#c9cfdb" stroke-dasharray="3 3"/>',
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#dfe3ea"/>',
        _polyline(xs, [y(v) for v in hold], HOLD_COLOUR, 1.5, "5 3"),
        _polyline(xs, [y(v) for v in follow], SIGNALS_COLOUR, 2),
    ]
    labelled: list[float] = []
    for value in (0.0, high, low):
        if all(abs(y(value) - y(other)) >= LABEL_GAP for other in labelled):  # no label over another
            labelled.append(value)
            parts.append(f'<text x="{LEFT - 6}" y="{y(value) + 4}" text-anchor="end" font-size="11" '
                         f'fill="#6b7385">{escape(percent(value))}</text>')
    baseline = HEIGHT - BOTTOM + 16
    parts += [
        f'<text x="{LEFT}" y="{baseline}" font-size="11" fill="#6b7385">{escape(points[0][0])}</text>',
        f'<text x="{WIDTH - RIGHT}" y="{baseline}" text-anchor="end" font-size="11" '
        f'fill="#6b7385">{escape(points[-1][0])}</text>',
        "</svg>",
    ]
    return Markup("".join(parts))
