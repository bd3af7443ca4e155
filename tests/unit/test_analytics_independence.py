"""A symbol's signal stands on its own: the same data gives the same signal whichever
other symbols are scored with it (each symbol has its own model)."""

import pytest

from services.signals.analytics.features import compute_features
from services.signals.analytics.model import walk_forward
from services.signals.analytics.signals import decide_signals
from services.signals.market_data.sample_file import SampleFileProvider
from services.signals.workflow.trading_signal import bars_frame

pytestmark = pytest.mark.unit

HISTORY_DAYS = 3 * 365
COMPANIES = (("AAPL",), ("AAPL", "MSFT"), ("AAPL", "IBM"), ("AAPL", "MSFT", "IBM", "GOOG"))


@pytest.fixture(scope="module")
async def sample_bars():
    """The sample file's last three years (to 2013-03-01), as the workflow fetches them."""
    provider = SampleFileProvider()
    await provider.start()
    instruments = await provider.qualify(["AAPL", "MSFT", "IBM", "GOOG"])
    return {s: bars_frame(await provider.daily_bars(i, days=HISTORY_DAYS)) for s, i in instruments.items()}


def score(symbols: tuple[str, ...], bars: dict) -> dict:
    bars = {s: bars[s] for s in symbols}
    features = {s: compute_features(b) for s, b in bars.items()}
    result = walk_forward(features, bars)
    return {s.symbol: s for s in decide_signals(result, features, bars)}


def test_aapl_gets_the_same_signal_alone_and_in_company(sample_bars):
    signals = {company: score(company, sample_bars)["AAPL"] for company in COMPANIES}
    alone = signals[("AAPL",)]
    assert alone.as_of == "2013-03-01" and alone.prob_up is not None
    for company, signal in signals.items():
        assert (signal.action, signal.strength, signal.prob_up, signal.score) == (
            alone.action, alone.strength, alone.prob_up, alone.score
        ), company
        assert signal.reasons == alone.reasons, company


def test_every_symbol_of_a_run_is_scored_as_if_alone(sample_bars):
    together = score(("AAPL", "MSFT", "IBM", "GOOG"), sample_bars)
    for symbol, signal in together.items():
        assert signal == score((symbol,), sample_bars)[symbol]
