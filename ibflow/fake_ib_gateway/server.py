"""`FakeIBGateway`: an asyncio TCP server that the real `ib_async` client talks to like to IB Gateway."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from types import TracebackType

from .clock import Clock, ReplayClock
from .contracts import ContractCatalog
from .faults import ConnectivityFlap, Faults
from .pacing import HistoricalPacing
from .protocol import ErrorCode
from .sample_data import SampleData, installed_sample_data
from .session import ClientSession, GatewayContext

log = logging.getLogger("ibflow.fake_ib_gateway")

DEFAULT_ACCOUNT = "DU123456"


@dataclass(frozen=True)
class Subscription:
    client_id: int
    req_id: int
    symbol: str


class FakeIBGateway:
    """Serves the bokeh-sampledata daily bars over the TWS API socket protocol.

    `port=0` binds an ephemeral port; `port` holds the bound one after `start()`.
    `faults` may be changed (or replaced) while running; `clock` drives pacing and the replay's
    wall time.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Faults | None = None,
        enforce_pacing: bool = True,
        clock: Clock = time.monotonic,
        account: str = DEFAULT_ACCOUNT,
        data: SampleData | None = None,
    ) -> None:
        self.host = host
        self.port = port
        data = data or installed_sample_data()
        self.replay = ReplayClock(clock, data.last_date)
        self._sessions: set[ClientSession] = set()
        self._connections: set[asyncio.Task[None]] = set()
        self._context = GatewayContext(
            data=data,
            catalog=ContractCatalog(data.symbols),
            faults=faults or Faults(),
            pacing=HistoricalPacing(clock) if enforce_pacing else None,
            replay=self.replay,
            account=account,
            order_ids=itertools.count(1),
            client_id_taken=lambda client_id: client_id in self.client_ids,
        )
        self._server: asyncio.Server | None = None
        self._flapping: asyncio.Task[None] | None = None

    @property
    def faults(self) -> Faults:
        return self._context.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._context.faults = faults

    @property
    def symbols(self) -> frozenset[str]:
        return self._context.catalog.symbols

    @property
    def client_ids(self) -> set[int]:
        return {s.client_id for s in self._sessions if s.client_id is not None}

    @property
    def market_data_subscriptions(self) -> list[Subscription]:
        return [
            Subscription(s.client_id, req_id, symbol)
            for s in self._sessions
            if s.client_id is not None
            for req_id, symbol in s.subscriptions.items()
        ]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve_connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("fake IB gateway listening on %s:%d (replay date %s, symbols %s)",
                 self.host, self.port, self.replay.replay_date, ", ".join(sorted(self.symbols)))
        if flap := self.faults.connectivity_flap:
            self._flapping = asyncio.create_task(self._flap_periodically(flap))

    async def stop(self) -> None:
        if self._flapping:
            self._flapping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flapping
        if self._server:
            self._server.close()
        for session in list(self._sessions):
            session.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server:
            await self._server.wait_closed()
        log.info("fake IB gateway on %s:%d stopped", self.host, self.port)

    async def __aenter__(self) -> FakeIBGateway:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def flap_connectivity(self, *, data_lost: bool = False, outage: float = 0.0) -> None:
        """Error 1100 to every client, then after `outage` seconds 1101 (subscriptions dropped) or 1102."""
        log.warning("connectivity flap: lost for %.1f s, data %s", outage, "lost" if data_lost else "kept")
        await self._notify_all(ErrorCode.CONNECTIVITY_LOST)
        await asyncio.sleep(outage)
        if data_lost:
            for session in self._ready_sessions():
                session.lose_market_data()
            await self._notify_all(ErrorCode.CONNECTIVITY_RESTORED_DATA_LOST)
        else:
            await self._notify_all(ErrorCode.CONNECTIVITY_RESTORED_DATA_KEPT)

    def _ready_sessions(self) -> list[ClientSession]:
        return [s for s in self._sessions if s.client_id is not None]

    async def _notify_all(self, code: ErrorCode) -> None:
        await asyncio.gather(*(s.notify(code) for s in self._ready_sessions()))

    async def _flap_periodically(self, flap: ConnectivityFlap) -> None:
        while True:
            await asyncio.sleep(flap.every)
            await self.flap_connectivity(data_lost=flap.data_lost, outage=flap.outage)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        session = ClientSession(self._context, reader, writer)
        self._connections.add(task)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            self._connections.discard(task)
