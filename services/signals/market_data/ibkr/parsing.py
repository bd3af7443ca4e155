"""The edge between `ib_async` objects and ibflow's own market data types.

Everything that reads an `ib_async` object (contract details, bars, tickers, request
errors) or builds one (the contracts ibflow asks for) lives here; nothing returned from
this module holds an `ib_async` object, so signal code never sees one.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Sequence

from ib_async import BarData, Contract, ContractDetails, RequestError, Stock, Ticker

from services.signals.market_data.ibkr.errors import IbMessage
from services.signals.market_data.models import Bar, Instrument, Quote

ROUTING_EXCHANGE = "SMART"
CURRENCY = "USD"
STOCK = "STK"
DELAYED_MARKET_DATA_TYPES = frozenset({3, 4})


def stock_request(symbol: str) -> Contract:
    """What ibflow asks IBKR to resolve for a watchlist symbol: a US stock, smart-routed."""
    return Stock(symbol, ROUTING_EXCHANGE, CURRENCY)


def contract_for(instrument: Instrument) -> Contract:
    """The contract of a qualified instrument (its conId is what IBKR goes by)."""
    return Contract(
        secType=STOCK,
        conId=instrument.con_id or 0,
        symbol=instrument.symbol,
        exchange=instrument.exchange,
        currency=instrument.currency,
    )


def instrument_from_details(symbol: str, details: Sequence[ContractDetails], source: str) -> Instrument | None:
    """The stock among `details` (None when IBKR returned none)."""
    stocks = [d for d in details if d.contract is not None and d.contract.secType == STOCK] or list(details)
    if not stocks or stocks[0].contract is None:
        return None
    found = stocks[0]
    contract = found.contract
    assert contract is not None
    listing = contract.primaryExchange or contract.exchange
    name = found.longName or symbol
    return Instrument(
        symbol=symbol,
        con_id=int(contract.conId) or None,
        exchange=contract.exchange or ROUTING_EXCHANGE,
        currency=contract.currency or CURRENCY,
        description=f"{name} ({listing})" if listing else name,
        source=source,
    )


def bars_from_ib(symbol: str, bars: Iterable[BarData]) -> tuple[Bar, ...]:
    """Daily bars in ascending date order; IBKR dates daily bars `yyyymmdd` (a `date`)."""
    parsed = {}
    for bar in bars:
        day = bar.date.date() if isinstance(bar.date, datetime.datetime) else bar.date
        parsed[day] = Bar(
            symbol=symbol,
            date=day,
            open=float(bar.open),
            high=float(bar.high),
            low=float(bar.low),
            close=float(bar.close),
            volume=float(bar.volume),
        )
    return tuple(parsed[day] for day in sorted(parsed))


def _price(value: float | None) -> float | None:
    # ib_async marks "no price yet" with NaN, and IBKR sends -1 for "not available".
    if value is None or math.isnan(value) or value <= 0:
        return None
    return float(value)


def quote_from_ticker(symbol: str, ticker: Ticker) -> Quote | None:
    """The ticker's current quote, or None while it holds no price at all. IBKR tells
    each subscription which kind of data it gets (`marketDataType`, 3/4 = delayed)."""
    bid, ask, last = _price(ticker.bid), _price(ticker.ask), _price(ticker.last)
    if bid is None and ask is None and last is None:
        return None
    delayed = ticker.marketDataType in DELAYED_MARKET_DATA_TYPES
    time = ticker.time or datetime.datetime.now(datetime.UTC)
    return Quote(symbol=symbol, bid=bid, ask=ask, last=last, time=time.astimezone(datetime.UTC), delayed=delayed)


def con_id_of(contract: Contract | None) -> int | None:
    return int(contract.conId) if contract is not None and contract.conId else None


def ib_message(error: RequestError) -> IbMessage:
    return IbMessage(code=error.code, message=error.message, req_id=error.reqId)


def gateway_time(value: datetime.datetime) -> datetime.datetime:
    """`reqCurrentTime`'s answer as an aware UTC datetime."""
    return value.astimezone(datetime.UTC) if value.tzinfo else value.replace(tzinfo=datetime.UTC)
