"""Real daily bars from the installed `bokeh-sampledata` package, read in place.

`stocks.csv.gz` holds public-domain Quandl WIKI prices (AAPL, IBM, MSFT from 2000-03-01,
GOOG from 2004, FB from 2012, all up to 2013-03-01): unadjusted open/high/low/close/volume
plus the dividend- and split-adjusted close. The data is never copied into this repository.
"""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path


STOCKS_FILE = "stocks.csv.gz"


@dataclass(frozen=True, slots=True)
class DailyBar:
    day: date
    open: float
    high: float
    low: float
    close: float
    volume: int
    adj_close: float


class SampleData:
    """Daily bars per symbol, oldest first."""

    def __init__(self, bars: Mapping[str, Sequence[DailyBar]]) -> None:
        self._bars = {symbol: tuple(sorted(rows, key=lambda b: b.day)) for symbol, rows in bars.items()}
        if not any(self._bars.values()):
            raise ValueError("sample data holds no bars")

    @classmethod
    def read(cls, path: Path) -> SampleData:
        bars: dict[str, list[DailyBar]] = defaultdict(list)
        with gzip.open(path, "rt", newline="") as rows:
            for row in csv.DictReader(rows):
                bars[row["Ticker"]].append(
                    DailyBar(
                        day=date.fromisoformat(row["Date"]),
                        open=float(row["Open"]),
                        high=float(row["High"]),
                        low=float(row["Low"]),
                        close=float(row["Close"]),
                        volume=int(row["Volume"]),
                        adj_close=float(row["Adj Close"]),
                    )
                )
        return cls(bars)

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(self._bars)

    @property
    def last_date(self) -> date:
        """The replay's "today": the newest date in the data."""
        return max(rows[-1].day for rows in self._bars.values() if rows)

    def bars(self, symbol: str) -> tuple[DailyBar, ...]:
        return self._bars.get(symbol, ())


def stocks_path() -> Path:
    # imported here: `ibflow` builds its parser in every container, most without the signals extra
    from bokeh_sampledata import package_path

    return package_path(STOCKS_FILE)


@cache
def installed_sample_data() -> SampleData:
    """The installed package's stocks, parsed once per process (the file never changes)."""
    return SampleData.read(stocks_path())
