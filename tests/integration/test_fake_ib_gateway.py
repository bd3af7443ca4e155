"""The fake IB gateway, driven by the real ib_async client over a real socket."""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import bokeh_sampledata
import pytest
from ib_async import IB, Contract, Stock
from ib_async.client import Client
from ib_async.wrapper import RequestError

from ibflow.fake_ib_gateway import (
    DEFAULT_ACCOUNT,
    MAX_SERVER_VERSION,
    MIN_SERVER_VERSION,
    ConnectivityFlap,
    FakeIBGateway,
    Faults,
    ManualClock,
)
from ibflow.fake_ib_gateway.cli import add_arguments, run, serve

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
REPLAY_DAY = date(2013, 3, 1)
REPLAY_NOW = datetime(2013, 3, 1, 21, 0, tzinfo=timezone.utc)  # 16:00 in New York
PACING_TEXT = "Historical Market Data Service error message:Historical data request pacing violation"
LIVE_TICKS = {1, 2, 4, 6, 7, 8, 9, 14}
DELAYED_TICKS = set(range(66, 77))
CONNECT_FAILURE_TIMEOUT = 1.0

Connect = Callable[..., Awaitable[IB]]


@cache
def sample_rows(symbol: str) -> dict[date, dict[str, str]]:
    """The bokeh-sampledata rows for `symbol`, read here independently of the fake."""
    path = Path(bokeh_sampledata.__file__).parent / "_data" / "stocks.csv.gz"
    with gzip.open(path, "rt", newline="") as rows:
        return {date.fromisoformat(r["Date"]): r for r in csv.DictReader(rows) if r["Ticker"] == symbol}


def aapl() -> Stock:
    return Stock("AAPL", "SMART", "USD")


class ErrorLog:
    """Everything an IB client's errorEvent reports."""

    def __init__(self, ib: IB) -> None:
        self.seen: list[tuple[int, int, str]] = []
        ib.errorEvent += lambda req_id, code, message, contract: self.seen.append((req_id, code, message))

    @property
    def codes(self) -> list[int]:
        return [code for _, code, _ in self.seen]


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def new_ib() -> IB:
    ib = IB()
    ib.RaiseRequestErrors = True
    return ib


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def gateway(clock: ManualClock) -> AsyncIterator[FakeIBGateway]:
    async with FakeIBGateway(HOST, 0, clock=clock) as running:
        yield running


@pytest.fixture
async def connect(gateway: FakeIBGateway) -> AsyncIterator[Connect]:
    """Connects real ib_async clients to the gateway; disconnects them afterwards."""
    clients: list[IB] = []

    async def connect_client(client_id: int = 1, readonly: bool = True, ib: IB | None = None, **kwargs: object) -> IB:
        ib = ib or new_ib()
        clients.append(ib)
        await ib.connectAsync(HOST, gateway.port, clientId=client_id, readonly=readonly, timeout=5, **kwargs)
        return ib

    yield connect_client
    for ib in clients:
        ib.disconnect()


@pytest.fixture
async def ib(connect: Connect) -> IB:
    return await connect()


async def qualified_aapl(ib: IB) -> Contract:
    [contract] = await ib.qualifyContractsAsync(aapl())
    assert contract is not None
    return contract


async def failed_connection(gateway: FakeIBGateway, client_id: int = 1) -> tuple[ErrorLog, list[str]]:
    """Connect expecting ib_async's time-out: the errors and the client's apiError messages."""
    ib = new_ib()
    errors = ErrorLog(ib)
    api_errors: list[str] = []
    ib.client.apiError += api_errors.append
    with pytest.raises(TimeoutError):
        await ib.connectAsync(HOST, gateway.port, clientId=client_id, readonly=True, timeout=CONNECT_FAILURE_TIMEOUT)
    assert not ib.isConnected()
    return errors, api_errors


# Protocol version

def test_ib_async_offers_exactly_the_version_range_the_fake_speaks() -> None:
    """Fails when an ib_async upgrade changes the protocol range: the fake must be re-checked then."""
    assert (Client.MinClientVersion, Client.MaxClientVersion) == (MIN_SERVER_VERSION, MAX_SERVER_VERSION)


@pytest.mark.parametrize("version", [157, 163, 164, 165, 166, 176, 178])
async def test_every_layout_in_the_range_works(connect: Connect, version: int) -> None:
    ib = IB()
    ib.client.MaxClientVersion = version
    errors = ErrorLog(ib)
    await connect(ib=ib)
    assert ib.client.serverVersion() == version

    contract, unknown = await ib.qualifyContractsAsync(aapl(), Stock("NOPE", "SMART", "USD"))
    assert contract is not None and contract.conId == 265598
    assert unknown is None
    assert errors.codes[-1] == 200
    bars = await ib.reqHistoricalDataAsync(contract, "", "5 D", "1 day", "TRADES", True)
    assert [b.date for b in bars][-1] == REPLAY_DAY and len(bars) == 5


async def test_a_client_newer_than_the_fake_disconnects_itself(gateway: FakeIBGateway) -> None:
    ib = new_ib()
    ib.client.MinClientVersion, ib.client.MaxClientVersion = MAX_SERVER_VERSION + 1, MAX_SERVER_VERSION + 5
    api_errors: list[str] = []
    ib.client.apiError += api_errors.append
    with pytest.raises(TimeoutError):
        await ib.connectAsync(HOST, gateway.port, clientId=1, timeout=CONNECT_FAILURE_TIMEOUT)
    assert any("version" in message for message in api_errors)


async def test_a_client_older_than_the_fake_is_closed(gateway: FakeIBGateway) -> None:
    ib = new_ib()
    ib.client.MinClientVersion, ib.client.MaxClientVersion = 100, MIN_SERVER_VERSION - 1
    with pytest.raises(TimeoutError):
        await ib.connectAsync(HOST, gateway.port, clientId=1, timeout=CONNECT_FAILURE_TIMEOUT)
    assert gateway.client_ids == set()


# Connecting

async def test_connect_readonly(gateway: FakeIBGateway, connect: Connect) -> None:
    ib = new_ib()
    errors = ErrorLog(ib)
    await connect(ib=ib)
    assert ib.isConnected()
    assert ib.managedAccounts() == [DEFAULT_ACCOUNT]
    assert ib.client.serverVersion() == MAX_SERVER_VERSION
    assert {2104, 2106, 2158} <= set(errors.codes)
    assert gateway.client_ids == {1}


async def test_connect_read_write_synchronises_orders_account_and_executions(connect: Connect) -> None:
    ib = await connect(client_id=0, readonly=False, raiseSyncErrors=True)
    assert ib.isConnected()
    assert (ib.positions(), ib.openTrades(), ib.fills()) == ([], [], [])


async def test_several_clients_are_served_at_once(gateway: FakeIBGateway, connect: Connect) -> None:
    first, second = await asyncio.gather(connect(client_id=1), connect(client_id=2))
    contracts = await asyncio.gather(qualified_aapl(first), qualified_aapl(second))
    assert [c.conId for c in contracts] == [265598, 265598]
    assert gateway.client_ids == {1, 2}


async def test_a_client_id_already_connected_gets_326(gateway: FakeIBGateway, ib: IB) -> None:
    errors, api_errors = await failed_connection(gateway, client_id=1)
    assert (-1, 326) in [(req_id, code) for req_id, code, _ in errors.seen]
    assert any("Peer closed connection" in message for message in api_errors)
    assert (await ib.reqCurrentTimeAsync()) == REPLAY_NOW  # the first client is untouched


# Contracts

async def test_qualify_every_served_stock(gateway: FakeIBGateway, ib: IB) -> None:
    contracts = await ib.qualifyContractsAsync(*(Stock(s, "SMART", "USD") for s in sorted(gateway.symbols)))
    assert {c.symbol: c.conId for c in contracts if isinstance(c, Contract)} == {
        "AAPL": 265598, "FB": 107113386, "GOOG": 208813720, "IBM": 8314, "MSFT": 272093,
    }


async def test_contract_details_say_the_data_is_replayed(ib: IB) -> None:
    [details] = await ib.reqContractDetailsAsync(aapl())
    assert details.longName == "Apple Inc (replayed sample data)"
    assert details.contract is not None and details.contract.primaryExchange == "NASDAQ"
    assert details.timeZoneId == "US/Eastern"


async def test_an_unknown_symbol_is_error_200_and_qualifies_to_none(ib: IB) -> None:
    errors = ErrorLog(ib)
    with pytest.raises(RequestError) as raised:
        await ib.qualifyContractsAsync(Stock("ZZZZ", "SMART", "USD"))
    assert raised.value.code == 200
    ib.RaiseRequestErrors = False
    assert await ib.qualifyContractsAsync(Stock("ZZZZ", "SMART", "USD")) == [None]
    assert [(code, message) for _, code, message in errors.seen] == 2 * [
        (200, "No security definition has been found for the request")
    ]
    assert all(req_id >= 0 for req_id, _, _ in errors.seen)


# Historical bars

def assert_bars_equal_sample_rows(bars: list, symbol: str) -> None:
    rows = sample_rows(symbol)
    for bar in bars:
        row = rows[bar.date]
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (
            float(row["Open"]), float(row["High"]), float(row["Low"]), float(row["Close"]), float(row["Volume"]),
        ), bar.date


async def test_daily_bars_are_the_sample_rows_ending_on_the_replay_day(ib: IB) -> None:
    bars = await ib.reqHistoricalDataAsync(await qualified_aapl(ib), "", "60 D", "1 day", "TRADES", True)
    expected_days = sorted(sample_rows("AAPL"))[-60:]
    assert [b.date for b in bars] == expected_days
    assert expected_days[-1] == REPLAY_DAY
    assert_bars_equal_sample_rows(list(bars), "AAPL")


async def test_a_year_of_bars_ending_on_a_given_date(ib: IB) -> None:
    [msft] = await ib.qualifyContractsAsync(Stock("MSFT", "SMART", "USD"))
    bars = await ib.reqHistoricalDataAsync(msft, date(2012, 6, 29), "1 Y", "1 day", "TRADES", True)
    expected_days = sorted(d for d in sample_rows("MSFT") if date(2011, 6, 29) < d <= date(2012, 6, 29))
    assert [b.date for b in bars] == expected_days
    assert_bars_equal_sample_rows(list(bars), "MSFT")


async def test_adjusted_bars_close_at_the_adjusted_close(ib: IB) -> None:
    bars = await ib.reqHistoricalDataAsync(await qualified_aapl(ib), "", "5 D", "1 day", "ADJUSTED_LAST", True)
    rows = sample_rows("AAPL")
    assert [b.close for b in bars] == [float(rows[b.date]["Adj Close"]) for b in bars]


async def test_intraday_bars_are_not_served(ib: IB) -> None:
    with pytest.raises(RequestError) as raised:
        await ib.reqHistoricalDataAsync(await qualified_aapl(ib), "", "1 D", "5 mins", "TRADES", True)
    assert raised.value.code == 162
    assert "HMDS query returned no data" in raised.value.message


@pytest.mark.parametrize(
    ("end", "why"),
    [
        (date(2013, 3, 4), "the replay ends at 20130301; 20130304 has not happened yet"),
        (date(1999, 12, 31), "no bars in the 1 Y up to 19991231"),
    ],
)
async def test_an_end_date_outside_the_sample_data_is_162_no_data(ib: IB, end: date, why: str) -> None:
    with pytest.raises(RequestError) as raised:
        await ib.reqHistoricalDataAsync(await qualified_aapl(ib), end, "1 Y", "1 day", "TRADES", True)
    assert raised.value.code == 162
    assert raised.value.message.endswith(f"HMDS query returned no data: AAPL@SMART TRADES ({why})")


async def test_a_malformed_duration_is_a_validation_warning(ib: IB) -> None:
    errors = ErrorLog(ib)
    contract = await qualified_aapl(ib)
    bars = await ib.reqHistoricalDataAsync(contract, "", "sixty days", "1 day", "TRADES", True, timeout=0.5)
    assert list(bars) == []  # 321 is a warning to ib_async, so the request times out
    assert errors.codes == [321]


# Market data

async def test_live_ticks_replay_the_last_bar(gateway: FakeIBGateway, ib: IB) -> None:
    contract = await qualified_aapl(ib)
    ticker = ib.reqMktData(contract)
    row, previous = (sample_rows("AAPL")[d] for d in (REPLAY_DAY, date(2013, 2, 28)))
    await until(lambda: ticker.volume == float(row["Volume"]))
    assert ticker.marketDataType == 1
    assert (ticker.last, ticker.open, ticker.high, ticker.low) == (
        float(row["Close"]), float(row["Open"]), float(row["High"]), float(row["Low"]),
    )
    assert ticker.close == float(previous["Close"])
    assert ticker.bid < ticker.last < ticker.ask
    assert [(s.client_id, s.symbol) for s in gateway.market_data_subscriptions] == [(1, "AAPL")]

    ib.cancelMktData(contract)
    await until(lambda: not gateway.market_data_subscriptions)


async def test_delayed_ticks_after_market_data_type_3(ib: IB) -> None:
    contract = await qualified_aapl(ib)
    ib.reqMarketDataType(3)
    ticker = ib.reqMktData(contract)
    await until(lambda: ticker.volume > 0)
    assert ticker.marketDataType == 3
    assert ticker.last == float(sample_rows("AAPL")[REPLAY_DAY]["Close"])
    assert {tick.tickType for tick in ticker.ticks} <= DELAYED_TICKS


async def test_a_snapshot_ends_and_leaves_no_subscription(gateway: FakeIBGateway, ib: IB) -> None:
    [ticker] = await ib.reqTickersAsync(await qualified_aapl(ib))
    assert ticker.last == float(sample_rows("AAPL")[REPLAY_DAY]["Close"])
    assert gateway.market_data_subscriptions == []


async def test_market_data_for_an_unknown_contract_is_error_200(ib: IB) -> None:
    errors = ErrorLog(ib)
    ib.reqMktData(Stock("ZZZZ", "SMART", "USD", conId=1))  # ib_async only streams contracts with a conId
    await until(lambda: 200 in errors.codes)


# Current time

async def test_current_time_is_the_replay_close_moving_with_the_clock(ib: IB, clock: ManualClock) -> None:
    assert await ib.reqCurrentTimeAsync() == REPLAY_NOW
    clock.advance(90)
    assert await ib.reqCurrentTimeAsync() == REPLAY_NOW + timedelta(seconds=90)


# Historical pacing, enforced by the fake

async def expect_pacing_violation(ib: IB, contract: Contract, duration: str) -> None:
    with pytest.raises(RequestError) as raised:
        await ib.reqHistoricalDataAsync(contract, "", duration, "1 day", "TRADES", True)
    assert (raised.value.code, raised.value.message) == (162, PACING_TEXT)


async def test_an_identical_request_within_15_s_is_a_pacing_violation(ib: IB, clock: ManualClock) -> None:
    contract = await qualified_aapl(ib)
    assert await ib.reqHistoricalDataAsync(contract, "", "10 D", "1 day", "TRADES", True)
    clock.advance(14)
    await expect_pacing_violation(ib, contract, "10 D")
    clock.advance(1)
    assert await ib.reqHistoricalDataAsync(contract, "", "10 D", "1 day", "TRADES", True)


async def test_six_requests_for_one_contract_within_2_s_is_a_pacing_violation(ib: IB, clock: ManualClock) -> None:
    contract = await qualified_aapl(ib)
    for n in range(1, 6):
        assert await ib.reqHistoricalDataAsync(contract, "", f"{n} D", "1 day", "TRADES", True)
        clock.advance(0.3)
    await expect_pacing_violation(ib, contract, "6 D")


async def test_the_61st_request_in_10_minutes_is_a_pacing_violation(
    gateway: FakeIBGateway, ib: IB, clock: ManualClock
) -> None:
    contracts = await ib.qualifyContractsAsync(*(Stock(s, "SMART", "USD") for s in sorted(gateway.symbols)))
    for n in range(60):
        assert await ib.reqHistoricalDataAsync(contracts[n % 5], "", f"{n + 1} D", "1 day", "TRADES", True)
        clock.advance(1)
    await expect_pacing_violation(ib, contracts[0], "99 D")
    clock.advance(600 - 60)
    assert await ib.reqHistoricalDataAsync(contracts[0], "", "99 D", "1 day", "TRADES", True)


async def test_pacing_can_be_switched_off() -> None:
    async with FakeIBGateway(HOST, 0, enforce_pacing=False, clock=ManualClock()) as gateway:
        ib = new_ib()
        await ib.connectAsync(HOST, gateway.port, clientId=1, readonly=True, timeout=5)
        try:
            contract = await qualified_aapl(ib)
            for _ in range(8):
                assert await ib.reqHistoricalDataAsync(contract, "", "10 D", "1 day", "TRADES", True)
        finally:
            ib.disconnect()


# Faults

async def test_fault_pacing_refuses_every_historical_request(gateway: FakeIBGateway, ib: IB) -> None:
    contract = await qualified_aapl(ib)
    gateway.faults.pacing_violation = True
    await expect_pacing_violation(ib, contract, "10 D")


async def test_fault_silence_leaves_contract_and_bar_requests_unanswered(gateway: FakeIBGateway, ib: IB) -> None:
    contract = await qualified_aapl(ib)
    gateway.faults.silence = True
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ib.qualifyContractsAsync(Stock("MSFT", "SMART", "USD")), 0.5)
    bars = await ib.reqHistoricalDataAsync(contract, "", "10 D", "1 day", "TRADES", True, timeout=0.5)
    assert list(bars) == []
    assert await ib.reqCurrentTimeAsync() == REPLAY_NOW  # the connection itself still answers


async def test_fault_unknown_contract_for_chosen_symbols(gateway: FakeIBGateway, ib: IB) -> None:
    contract = await qualified_aapl(ib)
    gateway.faults.unknown_symbols = frozenset({"AAPL"})
    errors = ErrorLog(ib)
    ib.RaiseRequestErrors = False
    apple, microsoft = await ib.qualifyContractsAsync(aapl(), Stock("MSFT", "SMART", "USD"))
    assert apple is None and microsoft is not None
    assert (await ib.qualifyContractsAsync(aapl()))[0] is None
    ib.RaiseRequestErrors = True
    with pytest.raises(RequestError) as raised:
        await ib.reqHistoricalDataAsync(contract, "", "10 D", "1 day", "TRADES", True)
    assert raised.value.code == 200
    assert errors.codes.count(200) == 3


async def test_fault_flap_with_data_kept(gateway: FakeIBGateway, ib: IB) -> None:
    errors = ErrorLog(ib)
    ib.reqMktData(await qualified_aapl(ib))
    await until(lambda: bool(gateway.market_data_subscriptions))
    await gateway.flap_connectivity(data_lost=False, outage=0.05)
    await until(lambda: 1102 in errors.codes)
    assert [(req_id, code) for req_id, code, _ in errors.seen] == [(-1, 1100), (-1, 1102)]
    assert ib.isConnected()
    assert len(gateway.market_data_subscriptions) == 1


async def test_fault_flap_with_data_lost(gateway: FakeIBGateway, ib: IB) -> None:
    errors = ErrorLog(ib)
    ib.reqMktData(await qualified_aapl(ib))
    await until(lambda: bool(gateway.market_data_subscriptions))
    await gateway.flap_connectivity(data_lost=True, outage=0.05)
    await until(lambda: 1101 in errors.codes)
    assert errors.codes == [1100, 1101]
    assert ib.isConnected()
    assert gateway.market_data_subscriptions == []


async def test_fault_flap_periodically_from_the_start() -> None:
    flap = ConnectivityFlap(data_lost=False, every=0.1, outage=0.05)
    async with FakeIBGateway(HOST, 0, faults=Faults(connectivity_flap=flap)) as gateway:
        ib = new_ib()
        errors = ErrorLog(ib)
        await ib.connectAsync(HOST, gateway.port, clientId=1, readonly=True, timeout=5)
        try:
            await until(lambda: errors.codes.count(1102) >= 2)
            flaps = [code for code in errors.codes if code in (1100, 1102)]
            assert flaps[:4] == [1100, 1102, 1100, 1102]
        finally:
            ib.disconnect()


async def test_fault_drop_socket_on_a_historical_request(gateway: FakeIBGateway, ib: IB) -> None:
    contract = await qualified_aapl(ib)
    disconnected = asyncio.Event()
    ib.disconnectedEvent += disconnected.set
    gateway.faults.drop_socket_on_historical = True
    with pytest.raises(ConnectionError):
        await ib.reqHistoricalDataAsync(contract, "", "10 D", "1 day", "TRADES", True)
    await asyncio.wait_for(disconnected.wait(), 2)
    assert not ib.isConnected()
    await until(lambda: gateway.client_ids == set())


async def test_fault_client_id_in_use(gateway: FakeIBGateway) -> None:
    gateway.faults.client_id_in_use = True
    errors, _ = await failed_connection(gateway)
    assert [(req_id, code) for req_id, code, _ in errors.seen] == [(-1, 326)]
    assert gateway.client_ids == set()


async def test_fault_login_refused(gateway: FakeIBGateway) -> None:
    gateway.faults.login_refused = True
    errors, api_errors = await failed_connection(gateway, client_id=5)
    assert errors.seen == []
    assert api_errors == ["Peer closed connection. clientId 5 already in use?", "API connection failed: TimeoutError()"]


async def test_fault_no_market_data_permission_falls_back_to_delayed(gateway: FakeIBGateway, ib: IB) -> None:
    contract = await qualified_aapl(ib)
    gateway.faults.no_market_data_permission = True
    errors = ErrorLog(ib)
    ticker = ib.reqMktData(contract)
    await until(lambda: 354 in errors.codes)
    assert math.isnan(ticker.last)
    assert gateway.market_data_subscriptions == []

    ib.reqMarketDataType(3)
    ticker = ib.reqMktData(contract)
    await until(lambda: ticker.volume > 0)
    assert ticker.marketDataType == 3
    assert {tick.tickType for tick in ticker.ticks} <= DELAYED_TICKS
    assert 10167 in errors.codes


# Robustness

async def test_unsupported_and_malformed_requests_do_not_end_the_connection(ib: IB) -> None:
    errors = ErrorLog(ib)
    ib.client.send(3999, 1)
    ib.client.send(20, "not-a-request-id")
    await until(lambda: 320 in errors.codes)
    assert await ib.reqCurrentTimeAsync() == REPLAY_NOW
    assert ib.isConnected()


async def test_stop_disconnects_clients() -> None:
    gateway = FakeIBGateway(HOST, 0)
    await gateway.start()
    ib = new_ib()
    await ib.connectAsync(HOST, gateway.port, clientId=1, readonly=True, timeout=5)
    disconnected = asyncio.Event()
    ib.disconnectedEvent += disconnected.set
    await gateway.stop()
    await asyncio.wait_for(disconnected.wait(), 2)
    assert not ib.isConnected()


# CLI entry

async def test_run_serves_with_the_given_faults() -> None:
    ready: asyncio.Future[FakeIBGateway] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(HOST, 0, Faults(unknown_symbols=frozenset({"IBM"})), on_ready=ready.set_result))
    try:
        gateway = await asyncio.wait_for(ready, 5)
        ib = IB()
        await ib.connectAsync(HOST, gateway.port, clientId=3, readonly=True, timeout=5)
        try:
            ibm, msft = await ib.qualifyContractsAsync(Stock("IBM", "SMART", "USD"), Stock("MSFT", "SMART", "USD"))
            assert ibm is None and msft is not None
        finally:
            ib.disconnect()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_serve_announces_its_port_and_applies_cli_faults(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    task = asyncio.create_task(serve(parser.parse_args(["--host", HOST, "--port", "0", "--fault", "pacing"])))
    try:
        port = await announced_port(capsys)
        ib = new_ib()
        await ib.connectAsync(HOST, port, clientId=1, readonly=True, timeout=5)
        try:
            await expect_pacing_violation(ib, await qualified_aapl(ib), "10 D")
        finally:
            ib.disconnect()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def announced_port(capsys: pytest.CaptureFixture[str]) -> int:
    output = ""
    async with asyncio.timeout(5):
        while not (match := re.search(r"listening on 127\.0\.0\.1:(\d+)", output)):
            await asyncio.sleep(0.01)
            output += capsys.readouterr().out
    return int(match.group(1))
