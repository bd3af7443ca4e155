"""The fake gateway's historical-data pacing rules, driven by a manual clock."""

from __future__ import annotations

import pytest

from ibflow.fake_ib_gateway.clock import ManualClock
from ibflow.fake_ib_gateway.pacing import HistoricalPacing, PacedRequest

pytestmark = pytest.mark.unit


def request(n: int, symbol: str = "AAPL", what: str = "TRADES") -> PacedRequest:
    weight = 2 if what == "BID_ASK" else 1
    return PacedRequest(identity=(symbol, what, f"{n} D"), series=(symbol, "SMART", what), weight=weight)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def pacing(clock: ManualClock) -> HistoricalPacing:
    return HistoricalPacing(clock)


def test_an_identical_request_within_15_s_is_refused(pacing: HistoricalPacing, clock: ManualClock) -> None:
    assert pacing.violation(request(1)) is None
    clock.advance(14.9)
    assert "identical" in (pacing.violation(request(1)) or "")
    clock.advance(0.1)
    assert pacing.violation(request(1)) is None


def test_the_sixth_request_for_one_contract_within_2_s_is_refused(pacing: HistoricalPacing, clock: ManualClock) -> None:
    for n in range(5):
        assert pacing.violation(request(n)) is None
        clock.advance(0.3)
    assert "same contract" in (pacing.violation(request(5)) or "")
    assert pacing.violation(request(5, symbol="MSFT")) is None
    assert pacing.violation(request(5, what="MIDPOINT")) is None
    clock.advance(0.8)  # the first of the five is now 2 s old
    assert pacing.violation(request(5)) is None


def test_the_61st_request_within_10_minutes_is_refused(pacing: HistoricalPacing, clock: ManualClock) -> None:
    for n in range(60):
        assert pacing.violation(request(n, symbol=f"S{n % 7}")) is None
        clock.advance(1)
    assert "60 requests" in (pacing.violation(request(60, symbol="OTHER")) or "")
    clock.advance(600 - 60)  # the first request leaves the window
    assert pacing.violation(request(60, symbol="OTHER")) is None
    assert pacing.violation(request(61, symbol="OTHER2")) is not None


def test_bid_ask_counts_twice(pacing: HistoricalPacing, clock: ManualClock) -> None:
    for n in range(30):
        assert pacing.violation(request(n, symbol=f"S{n % 7}", what="BID_ASK")) is None
        clock.advance(1)
    assert pacing.violation(request(99, symbol="OTHER")) is not None


def test_a_refused_request_costs_nothing(pacing: HistoricalPacing, clock: ManualClock) -> None:
    assert pacing.violation(request(1)) is None
    for _ in range(100):
        assert pacing.violation(request(1)) is not None
    for n in range(2, 61):
        clock.advance(1)
        assert pacing.violation(request(n, symbol=f"S{n % 7}")) is None
