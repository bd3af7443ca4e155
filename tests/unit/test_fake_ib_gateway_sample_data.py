"""The fake gateway's daily bars are the installed bokeh-sampledata rows, unchanged."""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from datetime import date
from pathlib import Path

import bokeh_sampledata
import pytest

from ibflow.fake_ib_gateway.sample_data import installed_sample_data, stocks_path

pytestmark = pytest.mark.unit

CSV = Path(bokeh_sampledata.__file__).parent / "_data" / "stocks.csv.gz"


def csv_rows() -> list[dict[str, str]]:
    with gzip.open(CSV, "rt", newline="") as rows:
        return list(csv.DictReader(rows))


def test_the_data_is_read_from_the_installed_package() -> None:
    assert stocks_path().resolve() == CSV.resolve()
    assert Path(bokeh_sampledata.__file__).parent in stocks_path().resolve().parents


def test_every_symbol_and_row_of_the_file_is_served() -> None:
    counts = Counter(row["Ticker"] for row in csv_rows())
    data = installed_sample_data()
    assert data.symbols == {"AAPL", "IBM", "MSFT", "GOOG", "FB"}
    assert {symbol: len(data.bars(symbol)) for symbol in data.symbols} == counts


def test_the_replay_date_is_the_last_date_in_the_data() -> None:
    assert installed_sample_data().last_date == date(2013, 3, 1)


def test_bars_are_oldest_first_and_equal_the_rows() -> None:
    rows = [row for row in csv_rows() if row["Ticker"] == "GOOG"]
    bars = installed_sample_data().bars("GOOG")
    assert [b.day for b in bars] == sorted(date.fromisoformat(r["Date"]) for r in rows)
    for bar, row in zip(bars, sorted(rows, key=lambda r: r["Date"]), strict=True):
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.adj_close) == (
            float(row["Open"]), float(row["High"]), float(row["Low"]), float(row["Close"]),
            int(row["Volume"]), float(row["Adj Close"]),
        )


def test_an_unknown_symbol_has_no_bars() -> None:
    assert installed_sample_data().bars("TSLA") == ()
