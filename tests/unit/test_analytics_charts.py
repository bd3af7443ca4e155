import re
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest

from services.signals.analytics.charts import HEIGHT, WIDTH, nice_ticks, position_markers, price_chart
from services.signals.analytics.features import compute_features
from services.signals.analytics.signals import Signal

pytestmark = pytest.mark.unit

SVG = "{http://www.w3.org/2000/svg}"


def bars(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    index = pd.DatetimeIndex(pd.bdate_range("2023-01-02", periods=n), name="date")
    return pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1e6}, index=index)


def signal(action="BUY", as_of="2024-01-01", symbol="AAPL") -> Signal:
    return Signal(symbol=symbol, action=action, strength=0.62, last_price=101.0, as_of=as_of, reasons=["r"])


def parse(svg: bytes) -> ElementTree.Element:
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def line_points(path: ElementTree.Element) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML](\S+) (\S+)", path.get("d"))]


def test_chart_is_an_svg_of_the_last_bars_with_price_averages_and_rsi():
    b = bars(400)
    root = parse(price_chart("AAPL", b, compute_features(b), signal()))
    assert (root.get("width"), root.get("height")) == (str(WIDTH), str(HEIGHT))
    assert root.findtext(f"{SVG}title") == "AAPL: BUY (strength 0.62) as of 2024-01-01"
    colored = {p.get("stroke"): p for p in root.iter(f"{SVG}path")}
    close, rsi = colored["#222222"], colored["#5e3c99"]
    # 250 bars shown, one point per bar; every point inside the drawing
    points = line_points(close)
    assert len(points) == 250
    assert all(0 <= x <= WIDTH and 0 <= y <= HEIGHT for x, y in points)
    assert len(line_points(rsi)) == 250
    # higher prices are drawn higher up
    shown = b["close"].iloc[-250:].to_numpy()
    assert points[int(shown.argmax())][1] < points[int(shown.argmin())][1]
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "BUY 0.62" in texts and "price" in texts and "RSI 14" in texts


def test_chart_with_past_markers_in_either_form():
    b = bars(300)
    features = compute_features(b)
    positions = pd.Series(np.where(features["sma_20"] > features["sma_50"], 1, 0), index=b.index)
    markers = position_markers(positions)
    shown = markers[markers.index.isin(b.index[-250:])]
    for given in (markers, markers.map({"BUY": 1, "SELL": -1})):
        root = parse(price_chart("AAPL", b, features, signal("SELL"), markers=given))
        # past markers and their two legend entries, plus the current signal's marker
        assert len(list(root.iter(f"{SVG}polygon"))) == len(shown) + 2 + 1
        assert {"past BUY", "past SELL"} <= {t.text for t in root.iter(f"{SVG}text")}


def test_chart_with_short_history_and_hold():
    b = bars(30)  # no 50-day average yet: its line is left out, not drawn at zero
    root = parse(price_chart("AAPL", b, compute_features(b), signal("HOLD")))
    strokes = [p.get("stroke") for p in root.iter(f"{SVG}path")]
    assert "#fdae61" not in strokes and "#222222" in strokes
    assert len(list(root.iter(f"{SVG}circle"))) == 1


def test_chart_text_is_escaped_and_holds_no_script_or_outside_reference():
    b = bars(120)
    svg = price_chart('<script>alert(1)</script>&"', b, compute_features(b), signal())
    root = parse(svg)
    assert b"<script" not in svg
    assert root.findtext(f"{SVG}title").startswith('<script>alert(1)</script>&"')
    for element in root.iter():
        assert not any("href" in name or name.startswith("on") for name in element.attrib)


def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(93.2, 131.7) == [100, 110, 120, 130]
    assert nice_ticks(5, 5) == [5]


def test_position_markers():
    dates = pd.bdate_range("2024-01-01", periods=6)
    positions = pd.Series([1, 1, 0, 0, 1, 0], index=dates)
    markers = position_markers(positions)
    assert markers.to_dict() == {dates[0]: "BUY", dates[2]: "SELL", dates[4]: "BUY", dates[5]: "SELL"}
