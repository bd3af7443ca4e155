"""Runs of `ibkr_trading_signal_workflow` through the signals service's run-request
handler (what its Kafka subscriber calls for each message), with `IbkrProvider` on the
real `ib_async` client against the fake IB gateway, one fault per test.

Each test asserts the run's terminal state, the run's log record naming the IBKR code
and meaning, the connection supervisor's transitions, and IBKR's health as the signals
service reports it. The handler and the provider stay up across runs, as in the
service: after a fault, the next run goes through without a restart.
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import gzip
import io
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import bokeh_sampledata
import pytest

from ibflow.fake_ib_gateway import FakeIBGateway
from services.signals.consumer import RunRequestHandler, SourceRecord
from services.signals.health import market_data_health
from services.signals.market_data.ibkr import IbkrProvider, IbkrSettings
from services.signals.market_data.ibkr.pacing import PacingLimiter, PacingRules
from services.signals.market_data.ibkr.supervisor import SupervisorState
from services.signals.workflow.runner import RunOutcome, RunResources
from services.signals.workflow.trading_signal import WORKFLOW_ID, WORKFLOWS
from shared import topics
from shared.artifact_store import ArtifactStore
from shared.events import RunParams, RunRequested

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
PROVIDER_LOGGER = "services.signals.market_data.ibkr"
GATEWAY_LOGGER = "ibflow.fake_ib_gateway"
REQUEST_TIMEOUT = 1.5
SYMBOLS = ["AAPL", "IBM"]
HISTORY_DAYS = 3 * 365
# Far above what a run takes; a run that hangs fails here instead of hanging the suite.
RUN_BOUND_SECONDS = 120
CONNECTING, READY, DEGRADED, BACKING_OFF = (
    SupervisorState.CONNECTING, SupervisorState.READY, SupervisorState.DEGRADED, SupervisorState.BACKING_OFF,
)


class Recorder:
    """The broker's stand-in: every event the run publishes."""

    def __init__(self) -> None:
        self.events: list = []

    async def __call__(self, event) -> None:
        self.events.append(event)

    def of_run(self, execution_id: str) -> list:
        return [e for e in self.events if e.execution_id == execution_id]


async def no_previous_run(*, workflow_id: str, execution_id: str) -> None:
    return None


@dataclass
class Service:
    """The parts of the signals service a run goes through."""

    gateway: FakeIBGateway
    provider: IbkrProvider
    handler: RunRequestHandler
    recorder: Recorder
    store: ArtifactStore

    async def run(self, symbols: list[str] = SYMBOLS) -> tuple[RunOutcome, list]:
        request = RunRequested(
            workflow_id=WORKFLOW_ID, execution_id=f"exec-ibkr-{uuid.uuid4().hex[:12]}", trigger="manual",
            params=RunParams(symbols=symbols),
        )
        async with asyncio.timeout(RUN_BOUND_SECONDS):
            outcome = await self.handler.handle(SourceRecord(topic=topics.RUNS_REQUESTED, value=request.to_bytes()))
        assert outcome is not None
        return outcome, self.recorder.of_run(request.execution_id)

    def health(self):
        component = market_data_health(self.provider)
        assert component.status != "unhealthy"
        return component


def run_status(events: list) -> str:
    [terminal] = [e for e in events if e.event_type in {"run.succeeded", "run.partial", "run.failed"}]
    return terminal.event_type


def run_logs(events: list, level: str | None = None) -> list:
    return [e for e in events if e.event_type == "log.record" and (level is None or e.level == level)]


def fetch_warning(events: list, symbol: str):
    [record] = [e for e in run_logs(events, "WARNING")
                if e.step_name == "fetch_market_data" and e.fields.get("symbol") == symbol]
    return record


def process_records(caplog: pytest.LogCaptureFixture, code: int | None) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(PROVIDER_LOGGER) and getattr(r, "ibkr_code", None) == code]


@pytest.fixture(autouse=True)
def provider_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=PROVIDER_LOGGER)
    caplog.set_level(logging.INFO, logger=GATEWAY_LOGGER)
    return caplog


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ArtifactStore:
    return ArtifactStore.from_url(tmp_path_factory.mktemp("ibkr-runs-store").as_uri())


@pytest.fixture
async def service(store, request) -> AsyncIterator[Service]:
    """A fake gateway, faulty from the start when the test says so (`with_faults`; tests
    also change `service.gateway.faults` between runs), and a started provider."""
    options = getattr(request, "param", {})
    async with FakeIBGateway(HOST, 0) as gateway:
        for name, value in options.get("faults", {}).items():
            setattr(gateway.faults, name, value)
        settings = IbkrSettings(
            _env_file=None,
            ibkr_host=HOST,
            ibkr_port=gateway.port,
            ibkr_client_id=17,
            ibkr_client_id_fallbacks=options.get("fallbacks", 0),
            ibkr_connect_timeout_seconds=1.5,
            ibkr_request_timeout_seconds=REQUEST_TIMEOUT,
            ibkr_reconnect_initial_delay_seconds=0.05,
            ibkr_reconnect_max_delay_seconds=0.3,
            ibkr_pacing_max_wait_seconds=3,
            ibkr_unanswered_pause_seconds=1,
            ibkr_market_data_type="auto",
        )
        # The fake gateway does not count a request whose socket it dropped; IBKR's 15 s
        # identical-request rule would only slow the re-sent request down here.
        provider = IbkrProvider(settings, pacing=PacingLimiter(PacingRules(identical_seconds=0.1)))
        await provider.start()
        recorder = Recorder()
        resources = RunResources(
            provider=provider, store=store, watchlist=tuple(SYMBOLS), history_days=HISTORY_DAYS,
            step_timeout_seconds=60, inline_max_bytes=64 * 1024, previous_signals=no_previous_run,
        )

        async def dead_letter(letter, key) -> None:
            raise AssertionError(f"unexpected dead letter: {letter.reason}")

        handler = RunRequestHandler(workflows=WORKFLOWS, resources=resources, publish=recorder,
                                    publish_dead_letter=dead_letter)
        try:
            yield Service(gateway, provider, handler, recorder, store)
        finally:
            await provider.stop()


def sample_rows() -> dict[tuple[str, str], dict[str, str]]:
    path = Path(bokeh_sampledata.__file__).parent / "_data" / "stocks.csv.gz"
    with gzip.open(path, "rt", newline="") as rows:
        return {(r["Ticker"], r["Date"]): r for r in csv.DictReader(rows)}


def with_faults(**faults):
    return pytest.mark.parametrize("service", [{"faults": faults}], indirect=True)


# --- the demo run -----------------------------------------------------------------------


async def test_a_run_stores_the_sample_data_bars_fetched_through_ib_async(service, provider_logs):
    outcome, events = await service.run()
    assert outcome.status == "succeeded", outcome.error
    assert run_status(events) == "run.succeeded"

    [dataset] = [e for e in events if e.event_type == "artifact.created" and e.name == "market_data"]
    assert dataset.metadata["provider"] == "ibkr"
    assert dataset.metadata["source"] == f"IBKR TRADES daily bars via {HOST}:{service.gateway.port}"
    assert (dataset.metadata["delayed"], dataset.metadata["replayed"]) == (False, True)
    stored = list(csv.DictReader(io.StringIO((await service.store.read_bytes(dataset.uri)).decode())))
    expected = sample_rows()
    first_after = (datetime.date(2013, 3, 1) - datetime.timedelta(days=HISTORY_DAYS)).isoformat()
    for symbol in SYMBOLS:
        dates = [r["date"] for r in stored if r["symbol"] == symbol]
        assert dates == sorted(d for (s, d) in expected if s == symbol and first_after < d <= "2013-03-01")
    for row in stored:
        sample = expected[(row["symbol"], row["date"])]
        for column in ("open", "high", "low", "close", "volume"):
            assert float(row[column]) == float(sample[column.capitalize()]), (row, column)

    records = provider_logs.get_records("setup") + provider_logs.records  # the service connected at start-up
    messages = [r.getMessage() for r in records if r.name.startswith(PROVIDER_LOGGER)]
    assert f"IBKR API session started at {HOST}:{service.gateway.port} as client id 17 (server version 178)" in messages
    assert any(m.startswith("IBKR historical daily bars for IBM: ") for m in messages)
    assert service.provider.supervisor.states == [CONNECTING, READY]
    assert service.health().status == "ok"


# --- one test per fault -------------------------------------------------------------------


@with_faults(pacing_violation=True)
async def test_pacing_violation_162_fails_the_run_naming_the_code(service, provider_logs):
    outcome, events = await service.run()
    assert outcome.status == "failed"
    assert run_status(events) == "run.failed"
    assert outcome.failed_step == "fetch_market_data"
    assert "no market data for any symbol" in outcome.error and "(code 162)" in outcome.error
    first = fetch_warning(events, "AAPL")
    assert (first.fields["code"], first.fields["stage"]) == (162, "daily_bars")
    assert first.fields["meaning"].startswith("historical data pacing violation")
    second = fetch_warning(events, "IBM")
    assert second.fields["code"] == 162
    assert "paused after an IBKR pacing violation" in second.fields["meaning"]
    assert process_records(provider_logs, 162)[0].meaning == "historical data pacing violation"
    assert service.provider.supervisor.states == [CONNECTING, READY]
    component = service.health()
    assert (component.status, component.detail["pacing"]["violations_in_a_row"]) == ("ok", 1)


@with_faults(silence=True)
async def test_a_silent_gateway_fails_the_run_within_the_request_timeout(service, provider_logs):
    outcome, events = await service.run()
    # within one timeout: every request the gateway left unanswered was out before the first
    # timeout, so none of them waited for a second one
    records = provider_logs.records
    unanswered = [i for i, r in enumerate(records)
                  if r.name.startswith(GATEWAY_LOGGER) and "left unanswered" in r.getMessage()]
    first_timeout = next(i for i, r in enumerate(records)
                         if r.name.startswith(PROVIDER_LOGGER) and "no answer from IB gateway" in r.getMessage())
    assert unanswered and max(unanswered) < first_timeout
    assert outcome.status == "failed"
    assert f"no answer from IB gateway within {REQUEST_TIMEOUT:g} s" in outcome.error
    record = fetch_warning(events, "AAPL")
    assert (record.fields["code"], record.fields["stage"]) == (None, "qualify")
    assert record.fields["meaning"] == f"no answer from IB gateway within {REQUEST_TIMEOUT:g} s"
    assert service.provider.supervisor.states == [CONNECTING, READY, DEGRADED]
    component = service.health()
    assert (component.status, component.detail["state"]) == ("degraded", "disconnected")

    service.gateway.faults.silence = False
    await asyncio.sleep(1.1)  # IBKR_UNANSWERED_PAUSE_SECONDS
    outcome, _ = await service.run()
    assert outcome.status == "succeeded", outcome.error
    assert service.provider.supervisor.states == [CONNECTING, READY, DEGRADED, READY]
    assert service.health().status == "ok"


@with_faults(unknown_symbols=frozenset({"MSFT"}))
async def test_an_unknown_contract_200_is_recorded_and_the_other_symbols_run(service, provider_logs):
    outcome, events = await service.run(["AAPL", "MSFT", "IBM"])
    assert outcome.status == "partial", outcome.error
    assert run_status(events) == "run.partial"
    assert outcome.summary["symbols"] == ["AAPL", "IBM"]
    assert "(code 200)" in outcome.summary["failed_symbols"]["MSFT"]
    [failed] = outcome.failed_items
    assert (failed.item, failed.step, failed.code) == ("MSFT", "fetch_market_data", 200)
    assert failed.reason.startswith("no security definition")
    record = fetch_warning(events, "MSFT")
    assert (record.fields["code"], record.fields["stage"]) == (200, "qualify")
    assert record.fields["meaning"].startswith("no security definition")
    assert record.message.startswith("MSFT skipped: no security definition")
    [dataset] = [e for e in events if e.event_type == "artifact.created" and e.name == "market_data"]
    assert "MSFT" in dataset.metadata["failed_symbols"]
    assert process_records(provider_logs, 200)
    assert service.provider.supervisor.states == [CONNECTING, READY]
    assert service.health().status == "ok"


async def test_a_connectivity_flap_1100_1102_during_a_run_is_waited_out(service, provider_logs):
    flap = asyncio.create_task(service.gateway.flap_connectivity(data_lost=False, outage=1.0))
    async with asyncio.timeout(5):
        while service.provider.supervisor.state is not DEGRADED:
            await asyncio.sleep(0.01)
    assert service.health().detail["state"] == "disconnected"
    outcome, events = await service.run()
    await flap
    assert outcome.status == "succeeded", outcome.error
    assert run_status(events) == "run.succeeded"
    assert service.provider.supervisor.states == [CONNECTING, READY, DEGRADED, READY]
    assert [t.code for t in service.provider.supervisor.transitions][-2:] == [1100, 1102]
    [lost] = process_records(provider_logs, 1100)
    assert lost.meaning == "IB Gateway lost its connection to IBKR's servers"
    assert service.health().status == "ok"


@with_faults(drop_socket_on_historical=True)
async def test_a_socket_dropped_mid_request_fails_the_run_and_the_next_run_succeeds(service, provider_logs):
    outcome, events = await service.run()
    assert outcome.status == "failed"
    assert "the connection to the IB gateway dropped during the request" in outcome.error
    record = fetch_warning(events, "AAPL")
    assert (record.fields["code"], record.fields["stage"]) == (None, "daily_bars")
    assert "dropped during the request, and again when asked again" in record.fields["meaning"]
    states = service.provider.supervisor.states
    assert states[:5] == [CONNECTING, READY, BACKING_OFF, CONNECTING, READY]
    assert states.count(BACKING_OFF) == 4  # two attempts for each of the two symbols

    # the gateway is fine again: the same service, no restart, runs the next request
    service.gateway.faults.drop_socket_on_historical = False
    async with asyncio.timeout(5):
        while service.provider.supervisor.state is not READY:
            await asyncio.sleep(0.01)
    outcome, events = await service.run()
    assert outcome.status == "succeeded", outcome.error
    assert run_status(events) == "run.succeeded"
    assert service.health().status == "ok"


async def test_a_dropped_socket_is_reconnected_and_the_run_succeeds(service, provider_logs):
    service.gateway.faults.drop_socket_on_historical = True

    async def gateway_back_after_the_drop() -> None:
        while BACKING_OFF not in service.provider.supervisor.states:
            await asyncio.sleep(0.005)
        service.gateway.faults.drop_socket_on_historical = False

    healer = asyncio.create_task(gateway_back_after_the_drop())
    outcome, events = await service.run()
    await healer
    assert outcome.status == "succeeded", outcome.error
    assert service.provider.supervisor.states == [CONNECTING, READY, BACKING_OFF, CONNECTING, READY]
    assert any("dropped during the request; asking again" in r.getMessage() for r in provider_logs.records)
    assert service.health().status == "ok"


@pytest.mark.parametrize("service", [{"faults": {"client_id_in_use": True}, "fallbacks": 1}], indirect=True)
async def test_client_id_in_use_326_fails_the_run_until_an_id_is_free(service, provider_logs):
    outcome, events = await service.run()
    assert outcome.status == "failed"
    assert "(code 326)" in outcome.error
    record = fetch_warning(events, "AAPL")
    assert (record.fields["code"], record.fields["stage"]) == (326, "qualify")
    assert "client ids 17, 18 are all in use" in record.fields["meaning"]
    assert process_records(provider_logs, 326)
    states = service.provider.supervisor.states
    assert states[:3] == [CONNECTING, CONNECTING, BACKING_OFF]
    assert READY not in states
    component = service.health()
    assert (component.status, component.detail["state"], component.detail["code"]) == (
        "degraded", "disconnected", 326)
    assert component.detail["last_failure"]["kind"] == "client_id_in_use"

    service.gateway.faults.client_id_in_use = False
    async with asyncio.timeout(5):
        while service.provider.supervisor.state is not READY:
            await asyncio.sleep(0.01)
    outcome, _ = await service.run()
    assert outcome.status == "succeeded", outcome.error


@with_faults(no_market_data_permission=True)
async def test_no_market_data_permission_354_runs_on_delayed_data_marked_as_such(service, provider_logs):
    outcome, events = await service.run()
    assert outcome.status == "succeeded", outcome.error
    [dataset] = [e for e in events if e.event_type == "artifact.created" and e.name == "market_data"]
    assert dataset.metadata["delayed"] is True
    fetched = [e for e in run_logs(events, "INFO") if e.step_name == "fetch_market_data" and "daily bars" in e.message]
    assert fetched and all(e.fields["delayed"] is True for e in fetched)
    assert all(e.delayed for e in events if e.event_type == "signal.generated")
    switched = [r for r in process_records(provider_logs, 354) if "using delayed market data" in r.getMessage()]
    assert switched and switched[0].meaning == "no market data subscription for live data"
    assert service.provider.supervisor.states == [CONNECTING, READY]
    component = service.health()
    assert (component.status, component.detail["delayed"]) == ("ok", True)


@with_faults(login_refused=True)
async def test_login_refused_fails_the_run_and_ibkr_is_unauthorized(service, provider_logs):
    outcome, events = await service.run()
    assert outcome.status == "failed"
    assert "IB Gateway is not logged in" in outcome.error
    record = fetch_warning(events, "AAPL")
    assert record.fields["stage"] == "qualify"
    assert "closed the API session right after the handshake" in record.fields["meaning"]
    states = service.provider.supervisor.states
    assert states[:2] == [CONNECTING, BACKING_OFF] and READY not in states
    component = service.health()
    assert (component.status, component.detail["state"]) == ("degraded", "unauthorized")

    service.gateway.faults.login_refused = False
    async with asyncio.timeout(5):
        while service.provider.supervisor.state is not READY:
            await asyncio.sleep(0.01)
    assert service.health().detail["state"] == "connected"
    outcome, _ = await service.run()
    assert outcome.status == "succeeded", outcome.error
