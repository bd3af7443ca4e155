"""The edge with `ib_async` (its objects in, ibflow's types out), IBKR's codes and
maintenance windows, and the request strings the provider sends."""

import datetime
import math

import pytest
from ib_async import BarData, Contract, ContractDetails, RequestError, Ticker

from services.signals.market_data.ibkr import errors, parsing
from services.signals.market_data.ibkr.maintenance import MaintenanceCalendar
from services.signals.market_data.ibkr.provider import IbkrProvider, ibkr_duration, ibkr_end
from services.signals.market_data.ibkr.settings import IbkrSettings
from services.signals.market_data.models import Bar, Instrument, Quote

pytestmark = pytest.mark.unit

NY = datetime.timezone(datetime.timedelta(hours=-5))
AAPL = Instrument("AAPL", 265598, "SMART", "USD", "Apple Inc (NASDAQ)", "ibkr")


def details(symbol: str, con_id: int, sec_type: str = "STK", long_name: str = "Apple Inc") -> ContractDetails:
    return ContractDetails(
        contract=Contract(secType=sec_type, conId=con_id, symbol=symbol, exchange="SMART",
                          primaryExchange="NASDAQ", currency="USD"),
        longName=long_name,
    )


def test_contract_details_become_an_instrument_with_the_conid():
    instrument = parsing.instrument_from_details("AAPL", [details("AAPL", 265598)], "ibkr")
    assert instrument == AAPL
    assert parsing.instrument_from_details("ZZZZ", [], "ibkr") is None


def test_the_stock_is_preferred_among_several_details():
    found = parsing.instrument_from_details(
        "AAPL", [details("AAPL", 1, sec_type="OPT", long_name="option"), details("AAPL", 265598)], "ibkr"
    )
    assert found is not None and found.con_id == 265598


def test_the_contract_asked_for_carries_the_conid():
    contract = parsing.contract_for(AAPL)
    assert (contract.conId, contract.symbol, contract.secType, contract.exchange, contract.currency) == (
        265598, "AAPL", "STK", "SMART", "USD")
    request = parsing.stock_request("MSFT")
    assert (request.symbol, request.secType, request.exchange, request.currency) == ("MSFT", "STK", "SMART", "USD")


def test_daily_bars_become_ibflow_bars_in_date_order():
    bars = [
        BarData(date=datetime.date(2013, 3, 1), open=438.0, high=438.1799, low=429.98, close=430.47,
                volume=19730300.0, average=-1, barCount=-1),
        BarData(date=datetime.date(2013, 2, 28), open=444.05, high=447.87, low=441.4, close=441.4,
                volume=11521100.0, average=-1, barCount=-1),
    ]
    assert parsing.bars_from_ib("AAPL", bars) == (
        Bar("AAPL", datetime.date(2013, 2, 28), 444.05, 447.87, 441.4, 441.4, 11521100.0),
        Bar("AAPL", datetime.date(2013, 3, 1), 438.0, 438.1799, 429.98, 430.47, 19730300.0),
    )
    assert all(type(b) is Bar for b in parsing.bars_from_ib("AAPL", bars))


def test_intraday_style_datetimes_are_reduced_to_the_day():
    bar = BarData(date=datetime.datetime(2013, 3, 1, 16, 0, tzinfo=NY), open=1, high=2, low=0.5, close=1.5,
                  volume=10, average=0, barCount=1)
    assert parsing.bars_from_ib("X", [bar])[0].date == datetime.date(2013, 3, 1)


def ticker(**values) -> Ticker:
    """A ticker as `ib_async` fills it (its constructor resets the prices)."""
    made = Ticker(contract=parsing.contract_for(AAPL))
    for name, value in values.items():
        setattr(made, name, value)
    return made


def test_a_ticker_becomes_a_quote_marked_delayed_by_its_market_data_type():
    ticker_ = ticker(bid=430.46, ask=430.48, last=430.47,
                     time=datetime.datetime(2026, 1, 2, 15, 0, tzinfo=datetime.UTC), marketDataType=3)
    assert parsing.quote_from_ticker("AAPL", ticker_) == Quote(
        "AAPL", 430.46, 430.48, 430.47, datetime.datetime(2026, 1, 2, 15, 0, tzinfo=datetime.UTC), True)
    ticker_.marketDataType = 1
    assert parsing.quote_from_ticker("AAPL", ticker_).delayed is False


def test_a_ticker_without_prices_is_no_quote_and_missing_prices_are_none():
    assert parsing.quote_from_ticker("AAPL", ticker()) is None
    quote = parsing.quote_from_ticker("AAPL", ticker(bid=math.nan, ask=-1.0, last=10.0))
    assert (quote.bid, quote.ask, quote.last) == (None, None, 10.0)


def test_request_errors_become_ibflow_messages():
    message = parsing.ib_message(RequestError(7, 200, "No security definition has been found for the request"))
    assert (message.req_id, message.code) == (7, 200)
    assert message.meaning.startswith("no security definition")
    assert message.describe() == (
        "IBKR 200 (no security definition: IBKR does not know this contract): "
        "No security definition has been found for the request"
    )


def test_error_162_means_what_its_text_says():
    pacing = "Historical Market Data Service error message:Historical data request pacing violation"
    assert errors.is_pacing_violation(162, pacing)
    assert errors.meaning(162, pacing) == "historical data pacing violation"
    permission = "Historical Market Data Service error message:No market data permissions for NASDAQ STK"
    assert not errors.is_pacing_violation(162, permission)
    assert errors.is_no_permission(162, permission)
    assert errors.meaning(162, "Historical Market Data Service error message:HMDS query returned no data: X") == (
        "the historical data query returned no data")
    assert errors.is_no_permission(354, "")
    assert errors.meaning(None, "no answer") == "no answer"


def test_warnings_and_named_sets():
    assert errors.is_warning(2104) and errors.is_warning(10167) and not errors.is_warning(162)
    assert errors.CONNECTIVITY_LOST == {1100, 1300, 2110}
    assert errors.CONNECTIVITY_RESTORED == {1101, 1102}
    assert errors.FARM_BROKEN == {2103, 2105, 2157}
    assert errors.farm_name("HMDS data farm connection is broken:ushmds") == "ushmds"


@pytest.mark.parametrize(
    ("new_york", "window"),
    [
        ("2026-03-11 00:14", None),
        ("2026-03-11 00:15", "IBKR daily server reset"),
        ("2026-03-11 01:44", "IBKR daily server reset"),
        ("2026-03-11 01:45", None),
        ("2026-07-15 00:30", "IBKR daily server reset"),  # summer time: the same New York hours
        ("2026-03-13 22:59", None),  # Friday
        ("2026-03-13 23:00", "IBKR weekend maintenance"),
        ("2026-03-14 00:30", "IBKR weekend maintenance"),  # Saturday: inside both, the longer wins
        ("2026-03-14 02:59", "IBKR weekend maintenance"),
        ("2026-03-14 03:00", None),
    ],
)
def test_maintenance_windows_in_new_york_time(new_york, window):
    from zoneinfo import ZoneInfo

    moment = datetime.datetime.fromisoformat(new_york).replace(tzinfo=ZoneInfo("America/New_York"))
    outage = MaintenanceCalendar().outage_at(moment.astimezone(datetime.UTC))
    assert (outage.name if outage else None) == window


def test_the_weekend_window_ends_saturday_three_am_new_york():
    outage = MaintenanceCalendar().outage_at(datetime.datetime(2026, 3, 14, 5, 0, tzinfo=datetime.UTC))
    assert outage is not None
    assert outage.end == datetime.datetime(2026, 3, 14, 7, 0, tzinfo=datetime.UTC)  # 03:00 EDT


def test_durations_cover_the_days_asked_for():
    assert ibkr_duration(30) == "30 D"
    assert ibkr_duration(365) == "365 D"
    assert ibkr_duration(366) == "2 Y"
    assert ibkr_duration(3 * 365) == "3 Y"
    assert ibkr_end(None) == ""
    assert ibkr_end(datetime.date(2013, 3, 1)) == "20130301 23:59:59 US/Eastern"


@pytest.mark.parametrize(
    ("end", "gateway_now", "final"),
    [
        (datetime.date(2013, 2, 28), "2013-03-01 10:00", True),
        (None, "2013-03-01 10:00", False),  # today's bar is still moving
        (None, "2013-03-01 16:00", True),  # the session has closed
        (datetime.date(2013, 3, 1), "2013-03-01 15:59", False),
        (None, "2013-03-02 10:00", True),  # Saturday
    ],
)
def test_bars_are_cached_only_once_they_cannot_change(end, gateway_now, final):
    from zoneinfo import ZoneInfo

    now = datetime.datetime.fromisoformat(gateway_now).replace(tzinfo=ZoneInfo("America/New_York"))
    assert IbkrProvider._final(end, now) is final


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("IBKR_HOST", "ib-gateway")
    monkeypatch.setenv("IBKR_PORT", "4004")
    monkeypatch.setenv("IBKR_CLIENT_ID", "30")
    monkeypatch.setenv("IBKR_CLIENT_ID_FALLBACKS", "2")
    monkeypatch.setenv("IBKR_MARKET_DATA_TYPE", "3")
    settings = IbkrSettings(_env_file=None)
    assert (settings.ibkr_host, settings.ibkr_port) == ("ib-gateway", 4004)
    assert settings.ibkr_client_ids == (30, 31, 32)
    assert settings.ibkr_market_data_type == "delayed"
    for name in ("IBKR_HOST", "IBKR_PORT", "IBKR_CLIENT_ID", "IBKR_CLIENT_ID_FALLBACKS", "IBKR_MARKET_DATA_TYPE"):
        monkeypatch.delenv(name)
    defaults = IbkrSettings(_env_file=None)
    assert (defaults.ibkr_port, defaults.ibkr_client_ids, defaults.ibkr_market_data_type) == (
        4002, (17, 18, 19, 20), "auto")
