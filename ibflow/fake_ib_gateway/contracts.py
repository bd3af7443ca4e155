"""The stocks the fake knows, how a request's contract matches one, and its contract-details message."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from .framing import Field
from .protocol import VERSION_SIZE_RULES, VERSION_SUGGESTED_SIZE_ONLY, Outgoing

CONTRACT_FIELD_COUNT = 12
REPLAY_MARKER = "(replayed sample data)"
MIN_TICK = 0.01
VALID_EXCHANGES = ("SMART", "AMEX", "NYSE", "ARCA", "BATS", "ISLAND", "IEX", "NASDAQ")
TIME_ZONE_ID = "US/Eastern"


@dataclass(frozen=True)
class ContractRef:
    """The twelve contract fields every request carries (`Client.send` of a `Contract`)."""

    con_id: int
    symbol: str
    sec_type: str
    last_trade_date: str
    strike: str
    right: str
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str

    @classmethod
    def parse(cls, fields: Sequence[str]) -> ContractRef:
        if len(fields) != CONTRACT_FIELD_COUNT:
            raise ValueError(f"a contract has {CONTRACT_FIELD_COUNT} fields, got {len(fields)}")
        con_id, *rest = fields
        return cls(int(con_id or 0), *rest)

    @property
    def label(self) -> str:
        return self.symbol or self.local_symbol or f"conId {self.con_id}"


@dataclass(frozen=True)
class Stock:
    symbol: str
    con_id: int
    name: str
    primary_exchange: str
    industry: str
    category: str
    subcategory: str

    @property
    def long_name(self) -> str:
        return f"{self.name} {REPLAY_MARKER}"

    @property
    def trading_class(self) -> str:
        # IBKR names NASDAQ-listed stocks' trading class after the market (NMS).
        return "NMS" if self.primary_exchange == "NASDAQ" else self.symbol


# Public reference data for the sample's tickers (real IBKR conIds, names as of 2013).
KNOWN_STOCKS: tuple[Stock, ...] = (
    Stock("AAPL", 265598, "Apple Inc", "NASDAQ", "Technology", "Computers", "Computers"),
    Stock(
        "IBM", 8314, "International Business Machines Corp", "NYSE",
        "Technology", "Computers", "Computer Services",
    ),
    Stock("MSFT", 272093, "Microsoft Corp", "NASDAQ", "Technology", "Software", "Applications Software"),
    Stock("GOOG", 208813720, "Google Inc", "NASDAQ", "Communications", "Internet", "Web Portals/ISP"),
    Stock(
        "FB", 107113386, "Facebook Inc", "NASDAQ",
        "Communications", "Internet", "Internet Content-Entertainment",
    ),
)


class ContractCatalog:
    """The known stocks that the sample data has bars for."""

    def __init__(self, symbols_with_data: Iterable[str]) -> None:
        available = set(symbols_with_data)
        self._by_symbol = {s.symbol: s for s in KNOWN_STOCKS if s.symbol in available}
        self._by_con_id = {s.con_id: s for s in self._by_symbol.values()}

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(self._by_symbol)

    def resolve(self, ref: ContractRef) -> Stock | None:
        if ref.con_id:
            stock = self._by_con_id.get(ref.con_id)
            if stock and ref.symbol and ref.symbol.upper() != stock.symbol:
                return None
        else:
            stock = self._by_symbol.get((ref.symbol or ref.local_symbol).upper())
        if stock is None:
            return None
        matches = (
            ref.sec_type.upper() in ("", "STK")
            and ref.currency.upper() in ("", "USD")
            and ref.exchange.upper() in ("", *VALID_EXCHANGES)
            and ref.primary_exchange.upper() in ("", stock.primary_exchange)
        )
        return stock if matches else None


def contract_details_message(
    req_id: int, stock: Stock, requested_exchange: str, session_date: date, server_version: int
) -> list[Field]:
    """`contractDetails` (msg 10) in the layout `Decoder.contractDetails` reads at `server_version`."""
    day = f"{session_date:%Y%m%d}"
    old_layout = server_version < VERSION_SIZE_RULES
    message: list[Field] = [Outgoing.CONTRACT_DATA]
    if old_layout:
        message.append(8)
    message += [
        req_id, stock.symbol, "STK", "", 0, "", requested_exchange.upper() or "SMART", "USD",
        stock.symbol, stock.trading_class, stock.trading_class, stock.con_id, MIN_TICK,
    ]
    if old_layout:
        message.append(1)  # mdSizeMultiplier, dropped in 164
    message += [
        "", "LMT,MKT,STP,STPLMT,TRAIL", ",".join(VALID_EXCHANGES), 1, 0, stock.long_name,
        stock.primary_exchange, "", stock.industry, stock.category, stock.subcategory, TIME_ZONE_ID,
        f"{day}:0400-{day}:2000", f"{day}:0930-{day}:1600", "", "",
        0,  # no secIdList entries
        1, "", "", "26", "", "COMMON",
    ]
    if server_version == VERSION_SUGGESTED_SIZE_ONLY:
        message.append(100)
    elif not old_layout:
        message += [0.0001, 0.0001, 100]
    return message
