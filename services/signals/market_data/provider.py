"""The interface every market data provider implements (the sample file now, IBKR next)."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterable
from typing import Protocol, runtime_checkable

from services.signals.market_data.models import BarSeries, Instrument, MarketDataError, ProviderHealth, Quote


@runtime_checkable
class MarketDataProvider(Protocol):
    name: str

    async def start(self) -> None:
        """Connect / load; called once at service start-up. Must not raise for an
        unreachable upstream: report it through `health()` and retry instead."""

    async def stop(self) -> None: ...

    async def qualify(self, symbols: Iterable[str]) -> dict[str, Instrument | MarketDataError]:
        """Resolve each symbol; a symbol that cannot be resolved maps to its error."""

    async def daily_bars(
        self, instrument: Instrument, *, days: int, end: datetime.date | None = None
    ) -> BarSeries:
        """Daily bars dated within the `days` calendar days ending at `end` (inclusive;
        default: the latest bar the provider has). Raises `MarketDataError`."""

    def stream_quotes(self, instruments: Iterable[Instrument]) -> AsyncIterator[Quote]:
        """Quotes as they arrive, until the caller stops iterating."""

    def health(self) -> ProviderHealth: ...
