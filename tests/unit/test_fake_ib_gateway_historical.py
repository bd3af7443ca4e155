"""How the fake gateway reads IBKR's endDateTime/duration strings and picks daily bars."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from ibflow.fake_ib_gateway.historical import Duration, InvalidRequest, parse_end_date
from ibflow.fake_ib_gateway.sample_data import DailyBar

pytestmark = pytest.mark.unit

REPLAY_DAY = date(2013, 3, 1)


def weekday_bars(first: date, last: date) -> list[DailyBar]:
    days = (first + timedelta(n) for n in range((last - first).days + 1))
    return [DailyBar(d, 1.0, 2.0, 0.5, 1.5, 100, 1.4) for d in days if d.weekday() < 5]


BARS = weekday_bars(date(2011, 1, 3), REPLAY_DAY)


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("", REPLAY_DAY),
        ("20120629 23:59:59 UTC", date(2012, 6, 29)),
        ("20120630 03:00:00 UTC", date(2012, 6, 29)),  # still the 29th in New York
        ("20120629-23:59:59", date(2012, 6, 29)),
        ("20120630-05:00:00", date(2012, 6, 30)),
        ("20120629 23:59:59 US/Eastern", date(2012, 6, 29)),
        ("20120630 08:00:00 Asia/Tokyo", date(2012, 6, 29)),
        ("20120629 23:59:59", date(2012, 6, 29)),  # no zone: the gateway's (New York)
    ],
)
def test_end_date_strings(text: str, day: date) -> None:
    assert parse_end_date(text, REPLAY_DAY) == day


@pytest.mark.parametrize("text", ["2012-06-29", "20120629", "20121329 10:00:00", "20120629 10:00:00 Mars/Olympus"])
def test_malformed_end_dates_are_invalid(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_end_date(text, REPLAY_DAY)


@pytest.mark.parametrize(
    ("duration", "first"),
    [
        ("5 D", date(2013, 2, 25)),
        ("1 W", date(2013, 2, 25)),
        ("2 W", date(2013, 2, 18)),
        ("1 M", date(2013, 2, 4)),
        ("1 Y", date(2012, 3, 2)),
        ("86400 S", date(2013, 3, 1)),
        ("86401 S", date(2013, 2, 28)),
    ],
)
def test_durations_reach_back_from_the_end(duration: str, first: date) -> None:
    bars = Duration.parse(duration).select(BARS, REPLAY_DAY)
    assert bars[0].day == first
    assert bars[-1].day == REPLAY_DAY


def test_days_count_trading_days() -> None:
    assert len(Duration.parse("60 D").select(BARS, REPLAY_DAY)) == 60


def test_months_clamp_to_the_end_of_a_shorter_month() -> None:
    bars = Duration.parse("1 M").select(BARS, date(2012, 3, 31))
    assert bars[0].day == date(2012, 3, 1)  # after 2012-02-29
    assert bars[-1].day == date(2012, 3, 30)  # the 31st is a Saturday


def test_no_bar_after_the_end_is_served() -> None:
    assert Duration.parse("1 Y").select(BARS, date(2010, 12, 31)) == []


@pytest.mark.parametrize("text", ["", "60", "60 d", "0 D", "5 X", "-1 D", "1.5 Y"])
def test_malformed_durations_are_invalid(text: str) -> None:
    with pytest.raises(InvalidRequest):
        Duration.parse(text)
