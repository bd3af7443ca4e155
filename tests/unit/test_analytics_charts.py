import io

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from services.signals.analytics.charts import position_markers, price_chart
from services.signals.analytics.features import compute_features
from services.signals.analytics.signals import Signal

pytestmark = pytest.mark.unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bars(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    index = pd.DatetimeIndex(pd.bdate_range("2023-01-02", periods=n), name="date")
    return pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1e6}, index=index)


def signal(action="BUY", as_of="2024-01-01") -> Signal:
    return Signal(symbol="AAPL", action=action, strength=0.62, last_price=101.0, as_of=as_of, reasons=["r"])


def decode(png: bytes) -> np.ndarray:
    assert png[:8] == PNG_MAGIC
    return image.imread(io.BytesIO(png), format="png")


def test_chart_is_a_decodable_png():
    b = bars(400)
    picture = decode(price_chart("AAPL", b, compute_features(b), signal()))
    height, width = picture.shape[:2]
    assert (width, height) == (1100, 650)
    assert picture[..., :3].std() > 0.05  # something was drawn


def test_chart_with_past_markers_in_either_form():
    b = bars(300)
    features = compute_features(b)
    positions = pd.Series(np.where(features["sma_20"] > features["sma_50"], 1, 0), index=b.index)
    markers = position_markers(positions)
    for given in (markers, markers.map({"BUY": 1, "SELL": -1})):
        decode(price_chart("AAPL", b, features, signal("SELL"), markers=given))


def test_chart_with_short_history_and_hold():
    b = bars(30)  # no 50-day average yet
    decode(price_chart("AAPL", b, compute_features(b), signal("HOLD")))


def test_position_markers():
    dates = pd.bdate_range("2024-01-01", periods=6)
    positions = pd.Series([1, 1, 0, 0, 1, 0], index=dates)
    markers = position_markers(positions)
    assert markers.to_dict() == {dates[0]: "BUY", dates[2]: "SELL", dates[4]: "BUY", dates[5]: "SELL"}
