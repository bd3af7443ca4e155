"""IBKR's historical-data pacing rules, enforced by ibflow, on a clock the test moves."""

import asyncio

import pytest

from services.signals.market_data.ibkr.pacing import PacingDelayTooLong, PacingLimiter, PacingRules

pytestmark = pytest.mark.unit


class Clock:
    """Monotonic seconds that move only when the limiter sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def limiter(clock: Clock, **rules) -> PacingLimiter:
    return PacingLimiter(PacingRules(**rules), clock=clock, sleep=clock.sleep)


async def send(pacer: PacingLimiter, request_key, contract_key, cost: int = 1, **kwargs) -> None:
    async with pacer.acquire(request_key, contract_key, cost, **kwargs):
        pass


async def test_sixty_requests_in_ten_minutes_then_the_next_waits_for_the_oldest_to_age_out():
    clock = Clock()
    pacer = limiter(clock)
    for i in range(60):
        await send(pacer, ("bars", i), ("contract", i))
        clock.now += 3
    assert clock.sleeps == []
    assert pacer.used_in_window() == 60
    await send(pacer, ("bars", 60), ("contract", 60))
    # the first request was sent at 1000, now is 1180: it ages out at 1600
    assert clock.sleeps == [420.0]
    assert pacer.used_in_window() == 60


async def test_an_identical_request_waits_fifteen_seconds():
    clock = Clock()
    pacer = limiter(clock)
    await send(pacer, "AAPL 3 Y", "AAPL")
    clock.now += 4
    await send(pacer, "MSFT 3 Y", "MSFT")
    await send(pacer, "AAPL 3 Y", "AAPL")
    assert clock.sleeps == [11.0]


async def test_a_sixth_request_for_one_contract_within_two_seconds_waits():
    clock = Clock()
    pacer = limiter(clock)
    for i in range(5):
        await send(pacer, ("AAPL", i), ("AAPL", "SMART", "TRADES"))
        clock.now += 0.1
    assert clock.sleeps == []
    await send(pacer, ("AAPL", 5), ("AAPL", "SMART", "TRADES"))
    assert clock.sleeps == [1.5]
    # other contracts are not held up by AAPL's
    await send(pacer, ("MSFT", 0), ("MSFT", "SMART", "TRADES"))
    assert clock.sleeps == [1.5]


async def test_at_most_fifty_requests_are_open_and_the_next_starts_when_one_ends():
    clock = Clock()
    pacer = limiter(clock)
    holders = []
    release = asyncio.Event()
    opened = asyncio.Semaphore(0)

    async def hold(i: int) -> None:
        async with pacer.acquire(("bars", i), ("contract", i)):
            opened.release()
            await release.wait()

    for i in range(50):
        holders.append(asyncio.create_task(hold(i)))
    for _ in range(50):
        await opened.acquire()
    assert pacer.open_cost == 50

    waiting = asyncio.create_task(send(pacer, ("bars", 50), ("contract", 50)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    release.set()
    await asyncio.wait_for(waiting, 5)
    await asyncio.gather(*holders)
    assert pacer.open_cost == 0


async def test_an_open_slot_that_does_not_come_within_max_wait_fails_the_request():
    clock = Clock()
    pacer = limiter(clock, max_open=1)
    async with pacer.acquire("a", "A"):
        with pytest.raises(PacingDelayTooLong, match="1 historical requests are open"):
            await send(pacer, "b", "B", max_wait=0.05)


async def test_bid_ask_counts_twice_in_the_ten_minute_budget_and_among_open_requests():
    clock = Clock()
    pacer = limiter(clock)
    for i in range(30):
        await send(pacer, ("bid_ask", i), ("contract", i), cost=2)
        clock.now += 1
    assert pacer.used_in_window() == 60
    await send(pacer, ("trades", 0), ("other", 0), cost=1)
    assert clock.sleeps == [570.0]

    open_pacer = limiter(Clock())
    async with open_pacer.acquire("x", "X", 2):
        assert open_pacer.open_cost == 2


async def test_bid_ask_fills_the_open_limit_at_half_the_requests():
    clock = Clock()
    pacer = limiter(clock, max_open=4)
    async with pacer.acquire("a", "A", 2), pacer.acquire("b", "B", 2):
        with pytest.raises(PacingDelayTooLong):
            await send(pacer, "c", "C", 1, max_wait=0.01)
    await send(pacer, "c", "C", 1)


async def test_a_pacing_violation_pauses_every_request_and_longer_each_time_in_a_row():
    clock = Clock()
    pacer = limiter(clock)
    assert pacer.record_violation() == 15.0
    await send(pacer, "a", "A")
    assert clock.sleeps == [15.0]

    assert pacer.record_violation() == 30.0
    await send(pacer, "b", "B")
    assert clock.sleeps == [15.0, 30.0]

    pacer.record_success()
    assert pacer.record_violation() == 15.0


async def test_the_pause_is_capped():
    clock = Clock()
    pacer = limiter(clock, violation_pause_seconds=100, violation_pause_max_seconds=250)
    assert [pacer.record_violation() for _ in range(4)] == [100, 200, 250, 250]


async def test_a_wait_longer_than_max_wait_fails_at_once_with_the_reason_and_code_162():
    clock = Clock()
    pacer = limiter(clock)
    pacer.record_violation()
    with pytest.raises(PacingDelayTooLong) as raised:
        await send(pacer, "a", "A", max_wait=10)
    assert raised.value.code == 162
    assert "pacing violation" in raised.value.reason
    assert raised.value.wait_seconds == pytest.approx(15.0)
    assert clock.sleeps == []
    # a wait within max_wait is waited
    await send(pacer, "a", "A", max_wait=20)
    assert clock.sleeps == [15.0]


async def test_status_describes_the_budget():
    clock = Clock()
    pacer = limiter(clock)
    await send(pacer, "a", "A")
    pacer.record_violation()
    assert pacer.status() == {
        "requests_in_window": 1, "window_seconds": 600.0, "max_requests": 60, "open": 0,
        "paused_for_seconds": 15.0, "violations_in_a_row": 1,
    }
