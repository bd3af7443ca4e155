"""The IBKR connection supervisor's state machine, driven by a scripted gateway and
the events `ib_async` would report."""

import asyncio
import datetime
import logging

import pytest

from services.signals.market_data.ibkr.errors import IbMessage
from services.signals.market_data.ibkr.maintenance import MaintenanceCalendar
from services.signals.market_data.ibkr.supervisor import (
    ConnectFailed,
    ConnectionSupervisor,
    FailureKind,
    NotReady,
    ReconnectPolicy,
    SilencePolicy,
    SupervisorState,
)

pytestmark = pytest.mark.unit

CONNECTING, READY, DEGRADED, BACKING_OFF, STOPPED = (
    SupervisorState.CONNECTING, SupervisorState.READY, SupervisorState.DEGRADED,
    SupervisorState.BACKING_OFF, SupervisorState.STOPPED,
)
# A Wednesday afternoon in New York: no maintenance window.
WEDNESDAY_NOON_ET = datetime.datetime(2026, 3, 11, 16, 0, tzinfo=datetime.UTC)
# 00:30 in New York on a Wednesday: inside the daily reset (00:15-01:45 ET).
DAILY_RESET_ET = datetime.datetime(2026, 3, 11, 4, 30, tzinfo=datetime.UTC)
UNREACHABLE = ConnectFailed(FailureKind.UNREACHABLE, "connection refused", 502)
IN_USE = ConnectFailed(FailureKind.CLIENT_ID_IN_USE, "client id in use", 326)
REFUSED = ConnectFailed(FailureKind.UNAUTHORIZED, "closed the API session: not logged in")


class ScriptedGateway:
    """Connect outcomes in order (None = success; the last one repeats)."""

    def __init__(self, *outcomes: ConnectFailed | None) -> None:
        self.outcomes = list(outcomes) or [None]
        self.connects: list[int] = []
        self.disconnects = 0
        self.heartbeats = 0
        self.heartbeat_error: BaseException | None = None
        self.connecting_now = 0
        self.most_at_once = 0
        self.during_connect = lambda: None

    async def connect(self, client_id: int) -> None:
        self.connecting_now += 1
        self.most_at_once = max(self.most_at_once, self.connecting_now)
        try:
            await asyncio.sleep(0)
            self.connects.append(client_id)
            self.during_connect()
            outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
            if outcome is not None:
                raise outcome
        finally:
            self.connecting_now -= 1

    def disconnect(self) -> None:
        self.disconnects += 1

    async def heartbeat(self) -> None:
        self.heartbeats += 1
        if self.heartbeat_error is not None:
            raise self.heartbeat_error


class Clock:
    def __init__(self, now: datetime.datetime = WEDNESDAY_NOON_ET) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now


class Sleeps:
    """Backoff sleeps are recorded and return at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(round(seconds, 6))
        await asyncio.sleep(0.001)


def supervisor(gateway, *, client_ids=(17,), clock=None, sleeps=None, rng=lambda: 1.0, **options):
    return ConnectionSupervisor(
        gateway,
        endpoint="127.0.0.1:4002",
        client_ids=client_ids,
        reconnect=options.pop("reconnect", ReconnectPolicy(initial_delay=1, max_delay=8)),
        heartbeat_interval=options.pop("heartbeat_interval", 60),
        clock=clock or Clock(),
        sleep=sleeps or Sleeps(),
        rng=rng,
        maintenance=MaintenanceCalendar(),
        **options,
    )


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


@pytest.fixture
async def stop_after():
    started = []
    yield started.append
    for sup in started:
        await sup.stop()


async def test_a_first_connect_goes_connecting_then_ready(stop_after):
    gateway = ScriptedGateway()
    sup = supervisor(gateway)
    stop_after(sup)
    sup.start()
    await sup.wait_ready(1)
    assert sup.states == [CONNECTING, READY]
    assert sup.transitions[0].from_state is STOPPED
    assert all(t.at == WEDNESDAY_NOON_ET for t in sup.transitions)
    assert sup.health().state == "connected"
    assert sup.client_id == 17


async def test_failed_attempts_back_off_exponentially_with_jitter_until_connected(stop_after):
    gateway = ScriptedGateway(UNREACHABLE, UNREACHABLE, UNREACHABLE, UNREACHABLE, UNREACHABLE, None)
    sleeps = Sleeps()
    sup = supervisor(gateway, sleeps=sleeps, rng=lambda: 1.0)
    stop_after(sup)
    sup.start()
    await until(lambda: sup.state is READY)
    assert sup.states == [CONNECTING, BACKING_OFF] * 5 + [CONNECTING, READY]
    # ceiling doubles from 1 s and stops at the 8 s cap; rng 1.0 takes the ceiling
    assert sleeps.delays == [1, 2, 4, 8, 8]
    backing_off = [t for t in sup.transitions if t.to_state is BACKING_OFF]
    assert {t.code for t in backing_off} == {502}
    assert "connection refused" in backing_off[0].reason


async def test_jitter_spreads_a_delay_over_its_upper_half():
    policy = ReconnectPolicy(initial_delay=2, max_delay=60)
    assert policy.delay(3, lambda: 0.0) == 4
    assert policy.delay(3, lambda: 1.0) == 8
    assert policy.delay(3, lambda: 0.5) == 6


async def test_while_backing_off_health_says_disconnected_with_the_reason(stop_after):
    gateway = ScriptedGateway(UNREACHABLE)
    sup = supervisor(gateway, sleeps=asyncio.sleep, reconnect=ReconnectPolicy(initial_delay=30, max_delay=30))
    stop_after(sup)
    sup.start()
    await until(lambda: sup.state is BACKING_OFF)
    health = sup.health()
    assert health.state == "disconnected"
    assert health.detail["supervisor_state"] == "backing_off"
    assert health.detail["code"] == 502
    assert health.detail["last_failure"]["kind"] == "unreachable"
    assert 15 <= health.detail["next_attempt_in_seconds"] <= 30
    # a request cannot wait for an attempt that comes later than its timeout: it fails now
    with pytest.raises(NotReady) as raised:
        async with asyncio.timeout(1):
            await sup.wait_ready(2)
    assert raised.value.code == 502
    assert "connection refused" in raised.value.message


async def test_client_id_in_use_tries_the_next_client_id_at_once(stop_after):
    gateway = ScriptedGateway(IN_USE, None)
    sleeps = Sleeps()
    sup = supervisor(gateway, client_ids=(17, 18, 19), sleeps=sleeps)
    stop_after(sup)
    sup.start()
    await sup.wait_ready(1)
    assert gateway.connects == [17, 18]
    assert sup.client_id == 18
    assert sleeps.delays == []
    assert [t.reason for t in sup.transitions if t.to_state is CONNECTING] == [
        "connecting as client id 17", "connecting as client id 18",
    ]


async def test_all_client_ids_in_use_backs_off_with_326_and_stays_disconnected(stop_after):
    gateway = ScriptedGateway(IN_USE)
    sup = supervisor(gateway, client_ids=(17, 18), sleeps=asyncio.sleep,
                     reconnect=ReconnectPolicy(initial_delay=30, max_delay=30))
    stop_after(sup)
    sup.start()
    await until(lambda: sup.state is BACKING_OFF)
    assert gateway.connects == [17, 18]
    transition = sup.transitions[-1]
    assert transition.code == 326
    assert "client ids 17, 18 are all in use" in transition.reason
    health = sup.health()
    assert health.state == "disconnected"
    assert health.detail["last_failure"]["kind"] == "client_id_in_use"


async def test_a_refused_api_session_is_unauthorized(stop_after):
    gateway = ScriptedGateway(REFUSED)
    sup = supervisor(gateway, sleeps=asyncio.sleep, reconnect=ReconnectPolicy(initial_delay=30, max_delay=30))
    stop_after(sup)
    sup.start()
    await until(lambda: sup.state is BACKING_OFF)
    assert sup.health().state == "unauthorized"
    assert "not logged in" in sup.health().detail["reason"]


async def test_connectivity_lost_then_restored_with_data_kept(stop_after):
    gateway = ScriptedGateway()
    sup = supervisor(gateway)
    stop_after(sup)
    lost_data = []

    async def on_data_lost() -> None:
        lost_data.append(True)

    sup.add_data_lost_hook(on_data_lost)
    sup.start()
    await sup.wait_ready(1)
    sup.ib_message(IbMessage(1100, "Connectivity between IB and Trader Workstation has been lost."))
    assert sup.state is DEGRADED
    assert sup.transitions[-1].code == 1100
    assert sup.health().state == "disconnected"
    assert sup.health().detail["connectivity"]["code"] == 1100

    waiting = asyncio.create_task(sup.wait_ready(5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    sup.ib_message(IbMessage(1102, "Connectivity between IB and Trader Workstation has been restored - data maintained."))
    await asyncio.wait_for(waiting, 1)
    assert sup.states == [CONNECTING, READY, DEGRADED, READY]
    assert sup.transitions[-1].code == 1102
    await asyncio.sleep(0.01)
    assert lost_data == []
    assert gateway.connects == [17]


async def test_restored_with_data_lost_runs_the_data_lost_hooks(stop_after):
    gateway = ScriptedGateway()
    sup = supervisor(gateway)
    stop_after(sup)
    lost_data = []

    async def on_data_lost() -> None:
        lost_data.append(True)

    sup.add_data_lost_hook(on_data_lost)
    sup.start()
    await sup.wait_ready(1)
    sup.ib_message(IbMessage(1100, "lost"))
    sup.ib_message(IbMessage(1101, "Connectivity between IB and Trader Workstation has been restored - data lost."))
    await until(lambda: lost_data == [True])
    assert sup.states == [CONNECTING, READY, DEGRADED, READY]


async def test_a_request_waiting_through_1100_that_does_not_recover_fails_with_1100(stop_after):
    sup = supervisor(ScriptedGateway())
    stop_after(sup)
    sup.start()
    await sup.wait_ready(1)
    sup.ib_message(IbMessage(1100, "lost"))
    with pytest.raises(NotReady) as raised:
        await sup.wait_ready(0.05)
    assert raised.value.code == 1100


async def test_a_broken_data_farm_degrades_but_requests_still_go(stop_after):
    sup = supervisor(ScriptedGateway())
    stop_after(sup)
    sup.start()
    await sup.wait_ready(1)
    sup.ib_message(IbMessage(2105, "HMDS data farm connection is broken:ushmds"))
    assert sup.state is DEGRADED
    health = sup.health()
    assert health.state == "connected"
    assert health.detail["degraded"] is True
    assert health.detail["farms_down"]["ushmds"]["code"] == 2105
    await sup.wait_ready(0.01)
    sup.ib_message(IbMessage(2106, "HMDS data farm connection is OK:ushmds"))
    assert sup.state is READY
    assert sup.states == [CONNECTING, READY, DEGRADED, READY]


async def test_a_farm_reported_broken_while_connecting_makes_the_connection_degraded(stop_after):
    gateway = ScriptedGateway()
    sup = supervisor(gateway)
    stop_after(sup)
    gateway.during_connect = lambda: sup.ib_message(IbMessage(2105, "HMDS data farm connection is broken:ushmds"))
    sup.start()
    await until(lambda: sup.state is DEGRADED)
    assert sup.states == [CONNECTING, DEGRADED]
    assert sup.transitions[-1].code == 2105


async def test_other_farms_ok_messages_change_nothing(stop_after):
    sup = supervisor(ScriptedGateway())
    stop_after(sup)
    sup.start()
    await sup.wait_ready(1)
    sup.ib_message(IbMessage(2104, "Market data farm connection is OK:usfarm"))
    sup.ib_message(IbMessage(2158, "Sec-def data farm connection is OK:secdefnj"))
    assert sup.states == [CONNECTING, READY]


async def test_a_lost_socket_reconnects_once_however_many_events_arrive(stop_after):
    gateway = ScriptedGateway()
    sup = supervisor(gateway)
    stop_after(sup)
    connected = []

    async def on_ready() -> None:
        connected.append(sup.client_id)

    sup.add_ready_hook(on_ready)
    sup.start()
    await sup.wait_ready(1)
    for _ in range(5):
        sup.connection_lost("socket closed")
    await until(lambda: len(gateway.connects) == 2 and sup.state is READY)
    await asyncio.sleep(0.05)
    assert gateway.connects == [17, 17]
    assert gateway.most_at_once == 1
    assert sup.states == [CONNECTING, READY, BACKING_OFF, CONNECTING, READY]
    assert "socket closed" in sup.transitions[2].reason
    await until(lambda: connected == [17, 17])


async def test_an_unanswered_heartbeat_drops_the_connection_and_reconnects(stop_after):
    gateway = ScriptedGateway()
    sup = supervisor(gateway, heartbeat_interval=0.02)
    stop_after(sup)
    sup.start()
    await sup.wait_ready(1)
    gateway.heartbeat_error = TimeoutError()
    await until(lambda: BACKING_OFF in sup.states)
    gateway.heartbeat_error = None
    await until(lambda: sup.state is READY and len(gateway.connects) == 2)
    assert gateway.disconnects >= 1
    assert "heartbeat (reqCurrentTime) failed" in next(t for t in sup.transitions if t.to_state is BACKING_OFF).reason


async def test_idle_connections_get_a_heartbeat(stop_after):
    gateway = ScriptedGateway()
    sup = supervisor(gateway, heartbeat_interval=0.02)
    stop_after(sup)
    sup.start()
    await sup.wait_ready(1)
    await until(lambda: gateway.heartbeats >= 2)
    assert sup.states == [CONNECTING, READY]


async def test_unanswered_requests_degrade_and_pause_requests_until_one_is_answered(stop_after):
    gateway = ScriptedGateway()
    sup = supervisor(gateway, silence=SilencePolicy(limit=2, pause=60))
    stop_after(sup)
    sup.start()
    await sup.wait_ready(1)
    sup.request_unanswered("contract details for AAPL", 20)
    assert sup.state is READY
    sup.request_unanswered("contract details for MSFT", 20)
    assert sup.state is DEGRADED
    assert sup.health().state == "disconnected"
    with pytest.raises(NotReady) as raised:
        await sup.wait_ready(5)
    assert raised.value.code is None
    assert "not answering requests" in raised.value.message
    # the unanswered requests made the supervisor check the connection at once
    await until(lambda: gateway.heartbeats >= 1)
    sup.request_answered()
    assert sup.state is READY
    await sup.wait_ready(0.01)


async def test_after_the_pause_requests_are_let_through_again(stop_after):
    sup = supervisor(ScriptedGateway(), silence=SilencePolicy(limit=1, pause=0.01))
    stop_after(sup)
    sup.start()
    await sup.wait_ready(1)
    sup.request_unanswered("historical daily bars for AAPL", 20)
    await asyncio.sleep(0.02)
    await sup.wait_ready(0.01)
    assert sup.state is DEGRADED


async def test_giving_up_after_max_attempts_stops_with_the_reason(stop_after):
    gateway = ScriptedGateway(UNREACHABLE)
    sup = supervisor(gateway, reconnect=ReconnectPolicy(initial_delay=0.01, max_delay=0.01, max_attempts=3))
    stop_after(sup)
    sup.start()
    await until(lambda: STOPPED in sup.states)
    assert len(gateway.connects) == 3
    assert "gave up after 3 failed attempts" in sup.transitions[-1].reason
    with pytest.raises(NotReady) as raised:
        await sup.wait_ready(1)
    assert "gave up" in raised.value.message


async def test_a_request_before_start_fails_at_once():
    sup = supervisor(ScriptedGateway())
    with pytest.raises(NotReady, match="not started"):
        await sup.wait_ready(5)


async def test_stop_disconnects_and_records_it():
    gateway = ScriptedGateway()
    sup = supervisor(gateway)
    sup.start()
    await sup.wait_ready(1)
    await sup.stop()
    assert sup.states == [CONNECTING, READY, STOPPED]
    assert gateway.disconnects == 1
    assert sup.health().state == "disconnected"


async def test_an_outage_in_the_daily_reset_is_logged_quietly_and_alerted_when_it_overruns(stop_after, caplog):
    caplog.set_level(logging.INFO, logger="services.signals.market_data.ibkr.supervisor")
    clock = Clock(DAILY_RESET_ET)
    gateway = ScriptedGateway(None, UNREACHABLE)
    sup = supervisor(gateway, clock=clock, overrun_grace=600,
                     reconnect=ReconnectPolicy(initial_delay=0.01, max_delay=0.01))
    stop_after(sup)
    sup.start()
    await sup.wait_ready(1)
    sup.connection_lost("socket closed")
    await until(lambda: sup.state is BACKING_OFF)
    outage_records = [r for r in caplog.records if "-> backing_off" in r.getMessage()]
    assert outage_records and all(r.levelno == logging.INFO for r in outage_records)
    assert "IBKR daily server reset" in outage_records[0].getMessage()
    assert sup.health().detail["expected_outage"]["window"] == "IBKR daily server reset"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    # 01:45 ET + 10 min grace has passed: one alert, and the outage is no longer quiet
    clock.now = datetime.datetime(2026, 3, 11, 6, 0, tzinfo=datetime.UTC)
    await until(lambda: any(r.levelno == logging.ERROR for r in caplog.records))
    await asyncio.sleep(0.05)
    alerts = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(alerts) == 1
    assert "overran the IBKR daily server reset" in alerts[0].getMessage()
    assert sup.health().detail["expected_outage"]["overran"] is True


async def test_an_outage_outside_the_windows_is_a_warning(stop_after, caplog):
    caplog.set_level(logging.INFO, logger="services.signals.market_data.ibkr.supervisor")
    gateway = ScriptedGateway(None, UNREACHABLE)
    sup = supervisor(gateway, reconnect=ReconnectPolicy(initial_delay=5, max_delay=5), sleeps=asyncio.sleep)
    stop_after(sup)
    sup.start()
    await sup.wait_ready(1)
    sup.connection_lost("socket closed")
    await until(lambda: sup.state is BACKING_OFF)
    [record] = [r for r in caplog.records if "-> backing_off" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "expected_outage" not in sup.health().detail
