"""The fake gateway's messages, decoded by ib_async's own Decoder at every server version it serves."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from ib_async.decoder import Decoder

from ibflow.fake_ib_gateway.contracts import (
    KNOWN_STOCKS,
    REPLAY_MARKER,
    ContractCatalog,
    ContractRef,
    contract_details_message,
)
from ibflow.fake_ib_gateway.framing import Field, decode_fields, encode_message
from ibflow.fake_ib_gateway.historical import historical_data_message
from ibflow.fake_ib_gateway.market_data import MarketDataType, tick_messages
from ibflow.fake_ib_gateway.protocol import MAX_SERVER_VERSION, MIN_SERVER_VERSION
from ibflow.fake_ib_gateway.sample_data import DailyBar

pytestmark = pytest.mark.unit

AAPL = next(s for s in KNOWN_STOCKS if s.symbol == "AAPL")
BARS = [
    DailyBar(date(2013, 2, 28), 444.05, 447.87, 441.4, 441.4, 11518400, 430.0),
    DailyBar(date(2013, 3, 1), 438.0, 438.1799, 429.98, 430.47, 19730300, 419.35),
]


class Recorder:
    """Stands in for ib_async's Wrapper and records what the Decoder calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))


def decode(version: int, *messages: list[Field]) -> list[tuple[str, tuple[Any, ...]]]:
    recorder = Recorder()
    decoder = Decoder(recorder, version)  # type: ignore[arg-type]
    for message in messages:
        decoder.interpret(decode_fields(encode_message(message)[4:]))
    return recorder.calls


@pytest.mark.parametrize("version", range(MIN_SERVER_VERSION, MAX_SERVER_VERSION + 1))
def test_contract_details_decode_at_every_version(version: int) -> None:
    [(name, (req_id, details))] = decode(version, contract_details_message(7, AAPL, "SMART", date(2013, 3, 1), version))
    assert (name, req_id) == ("contractDetails", 7)
    contract = details.contract
    assert (contract.conId, contract.symbol, contract.secType, contract.exchange, contract.primaryExchange) == (
        265598, "AAPL", "STK", "SMART", "NASDAQ",
    )
    assert (contract.currency, contract.tradingClass, details.minTick) == ("USD", "NMS", 0.01)
    assert details.longName == f"Apple Inc {REPLAY_MARKER}"
    assert details.stockType == "COMMON"
    assert details.suggestedSizeIncrement == (100 if version >= 163 else 0)
    assert details.minSize == (0.0001 if version >= 164 else 0)


def test_historical_bars_decode_to_the_same_values() -> None:
    calls = decode(MAX_SERVER_VERSION, historical_data_message(3, BARS, BARS[0].day, BARS[-1].day, "TRADES"))
    assert [name for name, _ in calls] == ["historicalData", "historicalData", "historicalDataEnd"]
    bars = [args[1] for _, args in calls[:2]]
    assert [(b.date, b.open, b.high, b.low, b.close, b.volume) for b in bars] == [
        ("20130228", 444.05, 447.87, 441.4, 441.4, 11518400),
        ("20130301", 438.0, 438.1799, 429.98, 430.47, 19730300),
    ]
    assert calls[2][1] == (3, "20130228", "20130301")


def test_adjusted_bars_scale_prices_by_the_adjusted_close() -> None:
    calls = decode(MAX_SERVER_VERSION, historical_data_message(3, BARS[1:], BARS[1].day, BARS[1].day, "ADJUSTED_LAST"))
    bar = calls[0][1][1]
    factor = 419.35 / 430.47
    assert bar.close == 419.35
    assert (bar.open, bar.high, bar.low) == pytest.approx((438.0 * factor, 438.1799 * factor, 429.98 * factor))
    assert bar.volume == 19730300


@pytest.mark.parametrize(
    ("data_type", "types"),
    [
        (MarketDataType.LIVE, {1: 430.46, 2: 430.48, 4: 430.47, 6: 438.1799, 7: 429.98, 14: 438.0, 9: 441.4}),
        (MarketDataType.DELAYED, {66: 430.46, 67: 430.48, 68: 430.47, 72: 438.1799, 73: 429.98, 76: 438.0, 75: 441.4}),
    ],
)
def test_ticks_replay_the_last_bar(data_type: MarketDataType, types: dict[int, float]) -> None:
    calls = decode(MAX_SERVER_VERSION, *tick_messages(5, BARS, data_type))
    prices = {args[1]: args[2] for name, args in calls if name == "priceSizeTick"}
    sizes = {args[1]: args[2] for name, args in calls if name == "tickSize"}
    assert prices == types
    assert sizes == {74 if data_type.is_delayed else 8: 19730300}


@pytest.mark.parametrize(
    ("fields", "symbol"),
    [
        (["265598", "", "", "", "0.0", "", "", "", "", "", "", ""], "AAPL"),
        (["0", "msft", "STK", "", "0.0", "", "", "SMART", "", "USD", "", ""], "MSFT"),
        (["0", "IBM", "", "", "", "", "", "NYSE", "NYSE", "", "", ""], "IBM"),
        (["0", "", "", "", "", "", "", "", "", "", "GOOG", ""], "GOOG"),
    ],
)
def test_contracts_resolve_by_con_id_or_symbol(fields: list[str], symbol: str) -> None:
    stock = ContractCatalog({"AAPL", "MSFT", "IBM", "GOOG"}).resolve(ContractRef.parse(fields))
    assert stock is not None and stock.symbol == symbol


@pytest.mark.parametrize(
    "fields",
    [
        ["265598", "MSFT", "STK", "", "", "", "", "SMART", "", "USD", "", ""],  # conId and symbol disagree
        ["0", "AAPL", "OPT", "", "", "", "", "SMART", "", "USD", "", ""],
        ["0", "AAPL", "STK", "", "", "", "", "SMART", "", "EUR", "", ""],
        ["0", "AAPL", "STK", "", "", "", "", "SMART", "NYSE", "USD", "", ""],
        ["0", "FB", "STK", "", "", "", "", "SMART", "", "USD", "", ""],  # no data for FB in this catalog
        ["0", "TSLA", "STK", "", "", "", "", "SMART", "", "USD", "", ""],
    ],
)
def test_contracts_that_do_not_match_resolve_to_nothing(fields: list[str]) -> None:
    assert ContractCatalog({"AAPL", "MSFT", "IBM", "GOOG"}).resolve(ContractRef.parse(fields)) is None
