"""The market data types every provider returns and every step consumes."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Literal

ProviderState = Literal["connected", "disconnected", "unauthorized", "disabled"]


@dataclass(frozen=True)
class Instrument:
    """A symbol resolved to something the provider can fetch."""

    symbol: str
    con_id: int | None
    exchange: str
    currency: str
    description: str
    source: str


@dataclass(frozen=True)
class Bar:
    """One daily bar; `date` is the trading day (exchange-local)."""

    symbol: str
    date: datetime.date
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True)
class Quote:
    symbol: str
    bid: float | None
    ask: float | None
    last: float | None
    time: datetime.datetime
    delayed: bool


@dataclass(frozen=True)
class BarSeries:
    """Daily bars of one instrument in ascending date order, and where they came from.

    `delayed`: the provider served delayed instead of live data (no subscription).
    `replayed`: historical data replayed from a file, not the market as of now.
    """

    instrument: Instrument
    bars: tuple[Bar, ...]
    source: str
    delayed: bool
    replayed: bool

    @property
    def first_date(self) -> datetime.date | None:
        return self.bars[0].date if self.bars else None

    @property
    def last_date(self) -> datetime.date | None:
        return self.bars[-1].date if self.bars else None


class MarketDataError(Exception):
    """A symbol could not be resolved or fetched.

    `code` is the provider's own error code where it has one (IBKR's 200, 162, 354...),
    `message` says in words what it means for the user.
    """

    def __init__(self, symbol: str, message: str, code: int | None = None) -> None:
        super().__init__(f"{symbol}: {message}" + (f" (code {code})" if code is not None else ""))
        self.symbol = symbol
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ProviderHealth:
    """`disabled` means market data from the broker is off by configuration (e.g. the
    sample-file provider is in use): healthy, not an outage."""

    state: ProviderState
    detail: dict[str, Any] = field(default_factory=dict)
