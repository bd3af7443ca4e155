"""`IbkrProvider` through the real `ib_async` client against the fake IB gateway, one
fault at a time: what the provider returns, which IBKR code and meaning it logs, how
the connection supervisor moves, and what `/health` says about IBKR."""

from __future__ import annotations

import asyncio
import csv
import datetime
import gzip
import logging
import socket
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path

import bokeh_sampledata
import pytest
from ib_async import IB

from ibflow.fake_ib_gateway import FakeIBGateway, Faults
from ibflow.fake_ib_gateway.clock import ManualClock
from services.signals.health import market_data_health
from services.signals.market_data.ibkr import IbkrProvider, IbkrSettings
from services.signals.market_data.ibkr.pacing import PacingLimiter, PacingRules
from services.signals.market_data.ibkr.supervisor import SupervisorState
from services.signals.market_data.models import BarSeries, Instrument, MarketDataError

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
PROVIDER_LOGGER = "services.signals.market_data.ibkr"
REQUEST_TIMEOUT = 1.5
CONNECTING, READY, DEGRADED, BACKING_OFF, STOPPED = (
    SupervisorState.CONNECTING, SupervisorState.READY, SupervisorState.DEGRADED,
    SupervisorState.BACKING_OFF, SupervisorState.STOPPED,
)


@cache
def sample_rows(symbol: str) -> dict[datetime.date, dict[str, str]]:
    """bokeh-sampledata's rows for `symbol`, read here independently of the code under test."""
    path = Path(bokeh_sampledata.__file__).parent / "_data" / "stocks.csv.gz"
    with gzip.open(path, "rt", newline="") as rows:
        return {datetime.date.fromisoformat(r["Date"]): r for r in csv.DictReader(rows) if r["Ticker"] == symbol}


def assert_bars_are_the_sample_rows(series: BarSeries, symbol: str, first_after: datetime.date,
                                    last: datetime.date) -> None:
    rows = sample_rows(symbol)
    expected_dates = sorted(d for d in rows if first_after < d <= last)
    assert [b.date for b in series.bars] == expected_dates
    for bar in series.bars:
        row = rows[bar.date]
        assert (bar.symbol, bar.open, bar.high, bar.low, bar.close, bar.volume) == (
            symbol, float(row["Open"]), float(row["High"]), float(row["Low"]), float(row["Close"]),
            float(row["Volume"]),
        )


def settings_for(port: int, **overrides: object) -> IbkrSettings:
    values: dict[str, object] = {
        "ibkr_host": HOST,
        "ibkr_port": port,
        "ibkr_client_id": 17,
        "ibkr_client_id_fallbacks": 0,
        "ibkr_connect_timeout_seconds": 1.5,
        "ibkr_request_timeout_seconds": REQUEST_TIMEOUT,
        "ibkr_reconnect_initial_delay_seconds": 0.05,
        "ibkr_reconnect_max_delay_seconds": 0.2,
        "ibkr_heartbeat_interval_seconds": 5,
        "ibkr_pacing_max_wait_seconds": 3,
        "ibkr_unanswered_pause_seconds": 30,
        "ibkr_market_data_type": "auto",
        **overrides,
    }
    return IbkrSettings(_env_file=None, **values)


async def until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def ibkr_records(caplog: pytest.LogCaptureFixture, code: int | None = None) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(PROVIDER_LOGGER)
            and (code is None or getattr(r, "ibkr_code", None) == code)]


GATEWAY_LOGGER = "ibflow.fake_ib_gateway"


def unanswered_at_first_timeout(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """How many requests the silent gateway had left unanswered when the provider logged its
    first timeout, and how many in all: equal when no request waited for a second timeout."""
    records = caplog.records
    unanswered = [i for i, r in enumerate(records)
                  if r.name.startswith(GATEWAY_LOGGER) and "left unanswered" in r.getMessage()]
    first_timeout = next(i for i, r in enumerate(records)
                         if r.name.startswith(PROVIDER_LOGGER) and "no answer from IB gateway" in r.getMessage())
    return sum(i < first_timeout for i in unanswered), len(unanswered)


def health_of(provider: IbkrProvider):
    component = market_data_health(provider)
    assert component.status in ("ok", "degraded")  # IBKR trouble is never "unhealthy"
    return component


@pytest.fixture(autouse=True)
def provider_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=PROVIDER_LOGGER)
    caplog.set_level(logging.INFO, logger=GATEWAY_LOGGER)
    return caplog


@pytest.fixture
async def gateway() -> AsyncIterator[FakeIBGateway]:
    async with FakeIBGateway(HOST, 0) as running:
        yield running


@pytest.fixture
async def providers() -> AsyncIterator[list[IbkrProvider]]:
    """Providers a test starts; all stopped afterwards."""
    started: list[IbkrProvider] = []
    yield started
    for provider in started:
        await provider.stop()


@pytest.fixture
def start(providers: list[IbkrProvider]):
    async def start_provider(port: int, pacing: PacingLimiter | None = None, **overrides: object) -> IbkrProvider:
        provider = IbkrProvider(settings_for(port, **overrides), pacing=pacing)
        providers.append(provider)
        await provider.start()
        return provider

    return start_provider


async def qualified(provider: IbkrProvider, symbol: str) -> Instrument:
    result = (await provider.qualify([symbol]))[symbol]
    assert isinstance(result, Instrument), result
    return result


# --- the happy path -------------------------------------------------------------------


async def test_daily_bars_through_ib_async_are_the_sample_data(gateway, start, provider_logs):
    provider = await start(gateway.port)
    assert provider.supervisor.states == [CONNECTING, READY]
    assert gateway.client_ids == {17}

    results = await provider.qualify(["AAPL", "IBM"])
    assert results["AAPL"] == Instrument("AAPL", 265598, "SMART", "USD", "Apple Inc (replayed sample data) (NASDAQ)",
                                         "ibkr")
    assert results["IBM"].con_id == 8314

    for symbol in ("AAPL", "IBM"):
        series = await provider.daily_bars(results[symbol], days=3 * 365)
        last = datetime.date(2013, 3, 1)
        assert_bars_are_the_sample_rows(series, symbol, last - datetime.timedelta(days=3 * 365), last)
        assert series.instrument == results[symbol]
        assert series.source == f"IBKR TRADES daily bars via {HOST}:{gateway.port}"
        assert (series.delayed, series.replayed) == (False, True)

    messages = [r.getMessage() for r in ibkr_records(provider_logs)]
    assert f"IBKR API session started at {HOST}:{gateway.port} as client id 17 (server version 178)" in messages
    assert any(m.startswith("IBKR historical daily bars for AAPL: 756 bars 2010-03-02 .. 2013-03-01") for m in messages)
    component = health_of(provider)
    assert (component.status, component.detail["state"], component.detail["supervisor_state"]) == (
        "ok", "connected", "ready")


async def test_an_end_date_in_the_past(gateway, start):
    provider = await start(gateway.port)
    aapl = await qualified(provider, "AAPL")
    end = datetime.date(2012, 6, 30)  # a Saturday
    series = await provider.daily_bars(aapl, days=30, end=end)
    assert series.last_date == datetime.date(2012, 6, 29)
    assert_bars_are_the_sample_rows(series, "AAPL", end - datetime.timedelta(days=30), end)


async def test_a_rerun_is_served_from_the_cache_without_asking_ibkr(gateway, start, provider_logs):
    provider = await start(gateway.port)
    aapl = await qualified(provider, "AAPL")
    first = await provider.daily_bars(aapl, days=365)
    again = await provider.daily_bars(aapl, days=365)
    narrower = await provider.daily_bars(aapl, days=200)
    assert again == first
    assert provider.pacing.used_in_window() == 2  # "365 D" and "200 D"; the repeat was not sent
    assert narrower.bars == first.bars[-len(narrower.bars):]
    assert any("from the cache" in r.getMessage() for r in ibkr_records(provider_logs))
    assert provider.health().detail["cached_bar_series"] == 2


async def test_runs_as_of_many_past_dates_ask_ibkr_once_per_symbol(gateway, start, provider_logs):
    """A backfill: each run ends at its own date; the first fetches the symbol's history up
    to the last closed session, the others are sliced from it."""
    provider = await start(gateway.port)
    instruments = [await qualified(provider, symbol) for symbol in ("AAPL", "MSFT", "IBM", "GOOG")]
    ends = [datetime.date(2012, 6, 1) + datetime.timedelta(days=n) for n in range(0, 92, 3)]
    for end in ends:
        for instrument in instruments:
            series = await provider.daily_bars(instrument, days=3 * 365, end=end)
            assert series.last_date <= end
            assert_bars_are_the_sample_rows(series, instrument.symbol, end - datetime.timedelta(days=3 * 365), end)
    assert provider.pacing.used_in_window() == len(instruments)
    assert sum("from the history fetched up to 2013-03-01" in r.getMessage()
               for r in ibkr_records(provider_logs)) == len(instruments) * (len(ends) - 1)


async def test_an_as_of_date_after_the_replay_is_162_no_data(gateway, start):
    provider = await start(gateway.port)
    aapl = await qualified(provider, "AAPL")
    with pytest.raises(MarketDataError) as raised:
        await provider.daily_bars(aapl, days=365, end=datetime.date(2013, 3, 8))
    assert raised.value.code == 162
    assert "20130308 has not happened yet" in raised.value.message


async def test_own_pacing_keeps_the_gateways_pacing_rules(gateway, start):
    """Seven requests for one contract in a row: the fake gateway answers the sixth within
    2 s with 162; ibflow's limiter holds it back instead. The gateway and the limiter share one
    manual clock that moves only when the limiter waits, so a busy machine delaying a request
    on its way cannot bunch requests up at the gateway."""
    clock = ManualClock(1000.0)

    async def wait_on_the_clock(seconds: float) -> None:
        clock.advance(seconds + 0.001)  # a real sleep overshoots a little too
        await asyncio.sleep(0)

    async with FakeIBGateway(HOST, 0, clock=clock) as paced_gateway:
        provider = await start(paced_gateway.port, pacing=PacingLimiter(clock=clock, sleep=wait_on_the_clock))
        aapl = await qualified(provider, "AAPL")
        for days in range(30, 37):
            series = await provider.daily_bars(aapl, days=days)
            assert series.bars
        assert provider.pacing.used_in_window() == 7
        assert clock.now > 1002  # the limiter did hold a request back


async def test_live_quotes_stream_until_the_caller_stops(gateway, start):
    provider = await start(gateway.port)
    aapl = await qualified(provider, "AAPL")
    quotes = provider.stream_quotes([aapl])
    quote = await asyncio.wait_for(anext(quotes), 5)
    assert (quote.symbol, quote.last, quote.bid, quote.ask, quote.delayed) == ("AAPL", 430.47, 430.46, 430.48, False)
    await until(lambda: [s.symbol for s in gateway.market_data_subscriptions] == ["AAPL"])
    await quotes.aclose()
    await until(lambda: gateway.market_data_subscriptions == [])


# --- faults ------------------------------------------------------------------------------


async def test_unknown_contract_is_error_200_for_that_symbol_only(gateway, start, provider_logs):
    gateway.faults.unknown_symbols = frozenset({"MSFT"})
    provider = await start(gateway.port)
    results = await provider.qualify(["AAPL", "MSFT"])
    assert isinstance(results["AAPL"], Instrument)
    error = results["MSFT"]
    assert isinstance(error, MarketDataError)
    assert error.code == 200
    assert error.message.startswith("no security definition")
    [record] = ibkr_records(provider_logs, 200)
    assert record.getMessage().startswith("IBKR 200 (no security definition: IBKR does not know this contract): "
                                          "contract details for MSFT failed")
    assert record.meaning.startswith("no security definition")
    assert provider.supervisor.states == [CONNECTING, READY]
    assert health_of(provider).status == "ok"


async def test_pacing_violation_162_fails_the_request_and_pauses_historical_requests(gateway, start, provider_logs):
    slept: list[float] = []

    async def recorded_sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    provider = await start(gateway.port, pacing=PacingLimiter(sleep=recorded_sleep))
    aapl, msft = await qualified(provider, "AAPL"), await qualified(provider, "MSFT")
    gateway.faults.pacing_violation = True
    with pytest.raises(MarketDataError) as raised:
        await provider.daily_bars(aapl, days=100)
    assert raised.value.code == 162
    assert raised.value.message.startswith("historical data pacing violation: ")
    assert "historical requests paused for 15 s" in raised.value.message
    assert provider.pacing.paused_for() > 10

    # the next request would wait longer than IBKR_PACING_MAX_WAIT_SECONDS: it fails at once
    gateway.faults.pacing_violation = False
    slept.clear()
    with pytest.raises(MarketDataError) as paused:
        await provider.daily_bars(msft, days=100)
    assert slept == []
    assert paused.value.code == 162
    assert "paused after an IBKR pacing violation" in paused.value.message

    records = ibkr_records(provider_logs, 162)
    assert records and records[0].meaning == "historical data pacing violation"
    assert provider.supervisor.states == [CONNECTING, READY]
    assert health_of(provider).detail["pacing"]["violations_in_a_row"] == 1


async def test_silence_times_out_every_request_and_then_pauses_requests(gateway, start, provider_logs):
    provider = await start(gateway.port, ibkr_unanswered_pause_seconds=1)
    gateway.faults.silence = True
    results = await provider.qualify(["AAPL", "MSFT", "IBM"])
    # all three were out at once, so they share one timeout instead of waiting for three
    assert unanswered_at_first_timeout(provider_logs) == (3, 3)
    for symbol, error in results.items():
        assert isinstance(error, MarketDataError), symbol
        assert error.code is None
        assert error.message == f"no answer from IB gateway within {REQUEST_TIMEOUT:g} s"
    assert provider.supervisor.state is DEGRADED
    component = health_of(provider)
    assert (component.status, component.detail["state"]) == ("degraded", "disconnected")
    assert component.detail["unanswered_requests"] == 3

    # requests fail fast while paused: none reaches the gateway to wait for another timeout
    again = await provider.qualify(["AAPL"])
    assert "not answering requests" in again["AAPL"].message
    assert unanswered_at_first_timeout(provider_logs) == (3, 3)
    assert health_of(provider).detail["unanswered_requests"] == 3

    # the gateway speaks again: after the pause one request goes through, and all is well
    gateway.faults.silence = False
    await asyncio.sleep(1.1)
    assert isinstance((await provider.qualify(["AAPL"]))["AAPL"], Instrument)
    assert provider.supervisor.states == [CONNECTING, READY, DEGRADED, READY]
    assert health_of(provider).status == "ok"
    assert any("no answer from IB gateway" in r.getMessage() for r in ibkr_records(provider_logs))


async def test_connectivity_flap_1100_then_1102_degrades_and_recovers(gateway, start):
    provider = await start(gateway.port)
    aapl = await qualified(provider, "AAPL")
    flap = asyncio.create_task(gateway.flap_connectivity(data_lost=False, outage=0.5))
    await until(lambda: provider.supervisor.state is DEGRADED)
    component = health_of(provider)
    assert (component.status, component.detail["state"], component.detail["connectivity"]["code"]) == (
        "degraded", "disconnected", 1100)
    # a request during the outage waits for the connectivity to come back
    series = await provider.daily_bars(aapl, days=30)
    assert series.bars
    await flap
    assert provider.supervisor.states == [CONNECTING, READY, DEGRADED, READY]
    assert [t.code for t in provider.supervisor.transitions][-2:] == [1100, 1102]
    assert health_of(provider).status == "ok"
    assert gateway.client_ids == {17}  # the socket stayed up: no reconnect


async def test_1101_data_lost_resubscribes_quotes_and_asks_again_for_open_requests(gateway, start, provider_logs):
    provider = await start(gateway.port, pacing=PacingLimiter(PacingRules(identical_seconds=0.1)),
                           ibkr_request_timeout_seconds=5)
    aapl = await qualified(provider, "AAPL")
    quotes = provider.stream_quotes([aapl])
    assert (await asyncio.wait_for(anext(quotes), 5)).last == 430.47

    gateway.faults.silence = True  # the historical request stays open...
    request = asyncio.create_task(provider.daily_bars(aapl, days=30))
    await until(lambda: any(r.name.startswith(GATEWAY_LOGGER) and "historical request" in r.getMessage()
                            and "left unanswered" in r.getMessage() for r in provider_logs.records))
    gateway.faults.silence = False
    await gateway.flap_connectivity(data_lost=True)  # ...and is lost with 1101
    series = await asyncio.wait_for(request, 5)
    assert series.bars
    assert any("IBKR reported market data lost (1101) during the request; asking again" in r.getMessage()
               for r in ibkr_records(provider_logs))

    # the gateway dropped the subscription; the provider asked for it again
    assert (await asyncio.wait_for(anext(quotes), 5)).symbol == "AAPL"
    await until(lambda: [s.symbol for s in gateway.market_data_subscriptions] == ["AAPL"])
    await quotes.aclose()
    assert [t.code for t in provider.supervisor.transitions][-2:] == [1100, 1101]


async def test_a_socket_dropped_mid_request_is_asked_again_after_the_reconnect(gateway, start, provider_logs):
    provider = await start(gateway.port, pacing=PacingLimiter(PacingRules(identical_seconds=0.1)))
    aapl = await qualified(provider, "AAPL")
    gateway.faults.drop_socket_on_historical = True

    async def heal_after_the_drop() -> None:
        await until(lambda: BACKING_OFF in provider.supervisor.states)
        gateway.faults.drop_socket_on_historical = False

    healer = asyncio.create_task(heal_after_the_drop())
    series = await asyncio.wait_for(provider.daily_bars(aapl, days=30), 10)
    await healer
    assert series.bars
    assert provider.supervisor.states == [CONNECTING, READY, BACKING_OFF, CONNECTING, READY]
    dropped = provider.supervisor.transitions[2]
    assert "was closed" in dropped.reason
    assert any("the connection to the IB gateway dropped during the request; asking again" in r.getMessage()
               for r in ibkr_records(provider_logs))
    assert health_of(provider).status == "ok"


async def test_a_socket_that_drops_on_every_request_fails_it(gateway, start, provider_logs):
    provider = await start(gateway.port, pacing=PacingLimiter(PacingRules(identical_seconds=0.1)))
    aapl = await qualified(provider, "AAPL")
    gateway.faults.drop_socket_on_historical = True
    with pytest.raises(MarketDataError) as raised:
        await asyncio.wait_for(provider.daily_bars(aapl, days=30), 15)
    assert raised.value.code is None
    assert raised.value.message == (
        "the connection to the IB gateway dropped during the request, and again when asked again")
    await until(lambda: provider.supervisor.state is READY)
    assert provider.supervisor.states.count(BACKING_OFF) == 2
    assert health_of(provider).status == "ok"


async def test_client_id_in_use_326_keeps_the_provider_disconnected(gateway, start, provider_logs):
    gateway.faults.client_id_in_use = True
    provider = await start(gateway.port, ibkr_client_id_fallbacks=1, ibkr_reconnect_initial_delay_seconds=300,
                           ibkr_reconnect_max_delay_seconds=300, ibkr_request_timeout_seconds=100)
    assert provider.supervisor.states[:3] == [CONNECTING, CONNECTING, BACKING_OFF]
    assert provider.supervisor.transitions[2].code == 326
    component = health_of(provider)
    assert (component.status, component.detail["state"], component.detail["code"]) == (
        "degraded", "disconnected", 326)
    assert "client ids 17, 18 are all in use" in component.detail["reason"]
    assert any(r.levelno == logging.WARNING and "client id 17 is taken, trying client id 18" in r.getMessage()
               for r in ibkr_records(provider_logs, 326))

    # fails at once rather than waiting for the connection: the wait it would take is longer
    # than the generous bound here, and the supervisor tries no connection meanwhile
    states = list(provider.supervisor.states)
    error = (await asyncio.wait_for(provider.qualify(["AAPL"]), 60))["AAPL"]
    assert provider.supervisor.states == states
    assert error.code == 326
    assert "all in use" in error.message


async def test_a_client_id_held_by_another_client_moves_to_the_next_one(gateway, start):
    other = IB()
    await other.connectAsync(HOST, gateway.port, clientId=17, readonly=True, timeout=5)
    try:
        provider = await start(gateway.port, ibkr_client_id_fallbacks=2)
        assert provider.supervisor.client_id == 18
        assert gateway.client_ids == {17, 18}
        assert health_of(provider).detail["client_id"] == 18
    finally:
        other.disconnect()


async def test_login_refused_is_unauthorized_until_the_gateway_lets_the_client_in(gateway, start, provider_logs):
    gateway.faults.login_refused = True
    provider = await start(gateway.port, ibkr_reconnect_initial_delay_seconds=0.3, ibkr_reconnect_max_delay_seconds=0.3)
    component = health_of(provider)
    assert (component.status, component.detail["state"]) == ("degraded", "unauthorized")
    assert "not logged in" in component.detail["reason"]
    error = (await provider.qualify(["AAPL"]))["AAPL"]
    assert "IB Gateway is not logged in" in error.message

    gateway.faults.login_refused = False
    await until(lambda: provider.supervisor.state is READY)
    assert health_of(provider).detail["state"] == "connected"
    assert isinstance((await provider.qualify(["AAPL"]))["AAPL"], Instrument)


async def test_no_market_data_permission_354_switches_to_delayed_data(gateway, start, provider_logs):
    gateway.faults.no_market_data_permission = True
    provider = await start(gateway.port)
    aapl = await qualified(provider, "AAPL")
    series = await provider.daily_bars(aapl, days=30)
    assert series.delayed is True
    assert series.bars

    switched = [r for r in ibkr_records(provider_logs, 354) if "using delayed market data" in r.getMessage()]
    assert switched and switched[0].meaning == "no market data subscription for live data"
    quotes = provider.stream_quotes([aapl])
    quote = await asyncio.wait_for(anext(quotes), 5)
    assert (quote.last, quote.delayed) == (430.47, True)
    await quotes.aclose()
    component = health_of(provider)
    assert (component.status, component.detail["delayed"]) == ("ok", True)
    assert provider.supervisor.states == [CONNECTING, READY]


async def test_delayed_by_configuration(gateway, start):
    provider = await start(gateway.port, ibkr_market_data_type="delayed")
    aapl = await qualified(provider, "AAPL")
    assert (await provider.daily_bars(aapl, days=10)).delayed is True


async def test_a_gateway_that_comes_up_later_is_connected_in_the_background(start):
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    provider = await start(port, ibkr_reconnect_initial_delay_seconds=0.1, ibkr_reconnect_max_delay_seconds=0.2)
    assert provider.supervisor.state is BACKING_OFF
    component = health_of(provider)
    assert (component.detail["state"], component.detail["code"]) == ("disconnected", 502)
    assert "connection refused" in component.detail["reason"]
    async with FakeIBGateway(HOST, port):
        await until(lambda: provider.supervisor.state is READY)
        assert isinstance((await provider.qualify(["IBM"]))["IBM"], Instrument)
