"""The sample-file market data provider and the provider factory."""

import datetime
import gzip
from types import SimpleNamespace

import pandas as pd
import pytest

from services.signals.market_data.ibkr import IbkrProvider
from services.signals.settings import SignalsSettings

from services.signals.market_data.factory import ProviderUnavailableError, build_provider
from services.signals.market_data.models import BarSeries, Instrument, MarketDataError
from services.signals.market_data.provider import MarketDataProvider
from services.signals.market_data.sample_file import SampleFileProvider, sample_file_path

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def csv_rows() -> pd.DataFrame:
    """The installed file, read independently of the provider."""
    return pd.read_csv(sample_file_path(), parse_dates=["Date"])


@pytest.fixture
async def provider() -> SampleFileProvider:
    provider = SampleFileProvider()
    await provider.start()
    return provider


def test_the_file_is_read_from_the_installed_package():
    path = sample_file_path()
    assert "site-packages" in path.parts or "dist-packages" in path.parts
    assert path.name == "stocks.csv.gz" and path.parent.parent.name == "bokeh_sampledata"


def test_the_provider_implements_the_interface(provider):
    assert isinstance(provider, MarketDataProvider)
    assert provider.name == "sample_file"


async def test_qualify_resolves_known_symbols_and_names_unknown_ones(provider):
    result = await provider.qualify(["AAPL", "XYZ"])
    assert result["AAPL"] == Instrument(
        symbol="AAPL",
        con_id=None,
        exchange="SMART",
        currency="USD",
        description="AAPL daily bars from bokeh-sampledata stocks.csv.gz",
        source="sample_file",
    )
    error = result["XYZ"]
    assert isinstance(error, MarketDataError)
    assert error.symbol == "XYZ" and error.code is None
    assert "unknown symbol" in error.message and "AAPL, FB, GOOG, IBM, MSFT" in error.message


@pytest.mark.parametrize("symbol", ["AAPL", "GOOG", "FB"])
async def test_bars_equal_the_rows_of_the_file(provider, csv_rows, symbol):
    instrument = (await provider.qualify([symbol]))[symbol]
    series = await provider.daily_bars(instrument, days=400)

    expected = csv_rows[csv_rows["Ticker"] == symbol].sort_values("Date")
    end = expected["Date"].max()
    expected = expected[expected["Date"] > end - pd.Timedelta(days=400)]
    assert isinstance(series, BarSeries)
    assert series.replayed is True and series.delayed is False
    assert series.source == "bokeh-sampledata stocks.csv.gz"
    assert series.instrument == instrument
    assert len(series.bars) == len(expected) > 0
    for bar, (_, row) in zip(series.bars, expected.iterrows()):
        assert bar.symbol == symbol
        assert bar.date == row["Date"].date()
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (
            row["Open"], row["High"], row["Low"], row["Close"], float(row["Volume"])
        )


async def test_the_window_ends_at_the_given_date_and_spans_calendar_days(provider):
    instrument = (await provider.qualify(["MSFT"]))["MSFT"]
    series = await provider.daily_bars(instrument, days=14, end=datetime.date(2010, 1, 15))
    dates = [bar.date for bar in series.bars]
    assert dates == sorted(dates)
    assert dates[-1] <= datetime.date(2010, 1, 15) and dates[0] > datetime.date(2010, 1, 1)
    assert series.first_date == dates[0] and series.last_date == dates[-1]
    assert all(d.weekday() < 5 for d in dates)


async def test_a_window_outside_the_file_is_a_market_data_error(provider):
    instrument = (await provider.qualify(["IBM"]))["IBM"]
    with pytest.raises(MarketDataError, match="no bars between") as caught:
        await provider.daily_bars(instrument, days=30, end=datetime.date(1990, 1, 1))
    assert caught.value.symbol == "IBM"


async def test_a_date_after_the_file_has_no_bars_rather_than_the_last_ones(provider):
    instrument = (await provider.qualify(["IBM"]))["IBM"]
    with pytest.raises(MarketDataError, match="no bars as of 2013-03-04: the sample file covers"):
        await provider.daily_bars(instrument, days=30, end=datetime.date(2013, 3, 4))


async def test_quotes_replay_the_last_close(provider):
    instruments = [v for v in (await provider.qualify(["AAPL", "IBM"])).values()]
    quotes = [q async for q in provider.stream_quotes(instruments)]
    assert [q.symbol for q in quotes] == ["AAPL", "IBM"]
    aapl = quotes[0]
    assert aapl.last == 430.47 and aapl.delayed is False
    assert aapl.time == datetime.datetime(2013, 3, 1, 21, 0, tzinfo=datetime.UTC)


def test_health_is_disabled_not_an_outage(provider):
    health = provider.health()
    assert health.state == "disabled"
    assert health.detail["provider"] == "sample_file"
    assert health.detail["symbols"] == ["AAPL", "FB", "GOOG", "IBM", "MSFT"]


async def test_an_unreadable_file_makes_every_symbol_fail_and_health_says_why(tmp_path):
    broken = tmp_path / "stocks.csv.gz"
    broken.write_bytes(b"not gzip")
    provider = SampleFileProvider(broken)
    await provider.start()
    error = (await provider.qualify(["AAPL"]))["AAPL"]
    assert isinstance(error, MarketDataError) and "cannot read the sample bars" in error.message
    health = provider.health()
    assert health.state == "disconnected" and "cannot read" in health.detail["error"]


async def test_a_file_of_the_same_shape_is_read_the_same_way(tmp_path):
    path = tmp_path / "stocks.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("Ticker,Date,Open,High,Low,Close,Volume,Adj Close\n")
        handle.write("ZZZ,2020-01-03,2,3,1,2.5,100,2.5\nZZZ,2020-01-02,1,2,0.5,1.5,50,1.5\n")
    provider = SampleFileProvider(path)
    await provider.start()
    instrument = (await provider.qualify(["ZZZ"]))["ZZZ"]
    series = await provider.daily_bars(instrument, days=10)
    assert [(b.date.isoformat(), b.close, b.volume) for b in series.bars] == [
        ("2020-01-02", 1.5, 50.0),
        ("2020-01-03", 2.5, 100.0),
    ]


def test_the_factory_builds_the_configured_provider():
    assert isinstance(build_provider(SimpleNamespace(market_data_provider="sample_file")), SampleFileProvider)
    with pytest.raises(ProviderUnavailableError, match="MARKET_DATA_PROVIDER=ibkr"):
        build_provider(SimpleNamespace(market_data_provider="ibkr"))
    assert isinstance(build_provider(SignalsSettings(_env_file=None)), IbkrProvider)
