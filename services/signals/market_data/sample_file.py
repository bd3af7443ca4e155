"""Daily bars replayed from the public-domain `stocks.csv.gz` of `bokeh-sampledata`.

Read from the installed package (never copied into the repository): AAPL, FB, GOOG,
IBM and MSFT, 2000-03-01 .. 2013-03-01, unadjusted OHLCV. The data is historical, so
every series is `replayed=True`; "today" for this provider is the file's last date.
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import gzip
import importlib.resources
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

from services.signals.market_data.models import (
    Bar,
    BarSeries,
    Instrument,
    MarketDataError,
    ProviderHealth,
    Quote,
)

log = logging.getLogger(__name__)

SOURCE = "bokeh-sampledata stocks.csv.gz"
_MARKET_CLOSE = datetime.time(16, 0, tzinfo=ZoneInfo("America/New_York"))


def sample_file_path() -> Path:
    return Path(str(importlib.resources.files("bokeh_sampledata") / "_data" / "stocks.csv.gz"))


def read_sample_bars(path: Path) -> dict[str, tuple[Bar, ...]]:
    """Symbol -> bars in ascending date order, as the file has them."""
    by_symbol: dict[str, dict[datetime.date, Bar]] = {}
    with gzip.open(path, "rt", newline="") as handle:
        for row in csv.DictReader(handle):
            bar = Bar(
                symbol=row["Ticker"],
                date=datetime.date.fromisoformat(row["Date"]),
                open=float(row["Open"]),
                high=float(row["High"]),
                low=float(row["Low"]),
                close=float(row["Close"]),
                volume=float(row["Volume"]),
            )
            by_symbol.setdefault(bar.symbol, {})[bar.date] = bar
    return {symbol: tuple(bars[d] for d in sorted(bars)) for symbol, bars in by_symbol.items()}


class SampleFileProvider:
    name = "sample_file"

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._bars: dict[str, tuple[Bar, ...]] = {}
        self._load_error: str | None = None

    async def start(self) -> None:
        try:
            self._path = self._path or sample_file_path()
            self._bars = await asyncio.to_thread(read_sample_bars, self._path)
            self._load_error = None
        except (OSError, ModuleNotFoundError, KeyError, ValueError) as exc:
            self._load_error = f"cannot read the sample bars: {type(exc).__name__}: {exc}"
            log.error("sample market data unavailable", extra={"error": self._load_error})

    async def stop(self) -> None:
        self._bars = {}

    async def qualify(self, symbols: Iterable[str]) -> dict[str, Instrument | MarketDataError]:
        return {symbol: self._qualify(symbol) for symbol in symbols}

    def _qualify(self, symbol: str) -> Instrument | MarketDataError:
        if self._load_error or not self._bars:
            return MarketDataError(symbol, self._load_error or "the sample-file provider was not started")
        if symbol not in self._bars:
            known = ", ".join(sorted(self._bars))
            return MarketDataError(symbol, f"unknown symbol: the sample file has {known}")
        return Instrument(
            symbol=symbol,
            con_id=None,
            exchange="SMART",
            currency="USD",
            description=f"{symbol} daily bars from {SOURCE}",
            source=self.name,
        )

    async def daily_bars(
        self, instrument: Instrument, *, days: int, end: datetime.date | None = None
    ) -> BarSeries:
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        bars = self._bars.get(instrument.symbol)
        if not bars:
            raise MarketDataError(instrument.symbol, "no bars in the sample file for this symbol")
        if end is not None and end > bars[-1].date:
            # what the replay has not reached yet does not exist: as IBKR answers for the future
            raise MarketDataError(
                instrument.symbol,
                f"no bars as of {end}: the sample file covers {bars[0].date} .. {bars[-1].date}",
            )
        end = end or bars[-1].date
        start = end - datetime.timedelta(days=days)
        window = tuple(bar for bar in bars if start < bar.date <= end)
        if not window:
            raise MarketDataError(
                instrument.symbol,
                f"no bars between {start} and {end}: the sample file covers {bars[0].date} .. {bars[-1].date}",
            )
        return BarSeries(instrument=instrument, bars=window, source=SOURCE, delayed=False, replayed=True)

    async def stream_quotes(self, instruments: Iterable[Instrument]) -> AsyncIterator[Quote]:
        """One quote per instrument: its last close, stamped at that day's close."""
        for instrument in instruments:
            bars = self._bars.get(instrument.symbol)
            if not bars:
                continue
            last = bars[-1]
            yield Quote(
                symbol=instrument.symbol,
                bid=None,
                ask=None,
                last=last.close,
                time=datetime.datetime.combine(last.date, _MARKET_CLOSE).astimezone(datetime.UTC),
                delayed=False,
            )

    def health(self) -> ProviderHealth:
        detail: dict = {"provider": self.name, "reason": "MARKET_DATA_PROVIDER=sample_file: IBKR is not used"}
        if self._path is not None:
            detail["file"] = str(self._path)
        if self._load_error:
            return ProviderHealth(state="disconnected", detail={**detail, "error": self._load_error})
        detail["symbols"] = sorted(self._bars)
        return ProviderHealth(state="disabled", detail=detail)
