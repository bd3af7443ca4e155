"""The process's one `ib_async.IB()`: connecting, events, and the requests ibflow makes.

This module and `parsing` are the only ones that touch `ib_async`; what leaves them is
ibflow's own types (`Instrument`, `Bar`, `Quote`, `IbMessage`) and exceptions
(`ConnectFailed`, `IbRequestError`, `ConnectionError`, `TimeoutError`).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable

from ib_async import IB, RequestError, Ticker
from ib_async.ib import StartupFetchNONE

from services.signals.market_data.ibkr import errors, parsing
from services.signals.market_data.ibkr.errors import IbMessage
from services.signals.market_data.ibkr.supervisor import ConnectFailed, FailureKind
from services.signals.market_data.models import Bar, Instrument, Quote

log = logging.getLogger(__name__)

LIVE, DELAYED = 1, 3


class IbRequestError(Exception):
    """IBKR answered a request with an error."""

    def __init__(self, message: IbMessage) -> None:
        super().__init__(message.describe())
        self.ib_message = message


class IbGatewayClient:
    """Implements the supervisor's `Gateway`; requests raise `ConnectionError` when the
    socket drops under them and leave their timeouts to the caller, except historical
    bars (below)."""

    def __init__(self, *, host: str, port: int, connect_timeout: float, request_timeout: float,
                 market_data_type: int = LIVE) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.market_data_type = market_data_type
        self.ib = IB()
        # A request IBKR refuses raises instead of quietly returning an empty result.
        self.ib.RaiseRequestErrors = True
        self.ib.errorEvent += self._on_error
        self.ib.disconnectedEvent += self._on_disconnected
        self.ib.pendingTickersEvent += self._on_tickers
        self.on_connection_message: Callable[[IbMessage], None] = lambda message: None
        self.on_request_message: Callable[[IbMessage, int | None], None] = lambda message, con_id: None
        self.on_lost: Callable[[str], None] = lambda reason: None
        self.on_quote: Callable[[int, Quote], None] = lambda con_id, quote: None
        self._closing = False
        self._connect_messages: list[IbMessage] | None = None
        self._clock_offset = datetime.timedelta(0)
        # Market data requested on the current connection, by conId.
        self._quoted: dict[int, Instrument] = {}

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def is_ready(self) -> bool:
        return self.ib.isConnected() and self.ib.client.isReady()

    # --- Gateway ---------------------------------------------------------------------

    async def connect(self, client_id: int) -> None:
        self._connect_messages = []
        self._quoted.clear()
        closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_api_error(text: str) -> None:
            if not closed.done():
                closed.set_result(text)

        self.ib.client.apiError += on_api_error
        attempt = asyncio.ensure_future(self.ib.connectAsync(
            self.host, self.port, client_id, timeout=self.connect_timeout, readonly=True,
            fetchFields=StartupFetchNONE,
        ))
        try:
            # connectAsync waits `timeout` for the handshake and again for its start-up
            # request; the outer bound only guards against it waiting longer.
            done, _ = await asyncio.wait({attempt, closed}, timeout=2 * self.connect_timeout + 1,
                                         return_when=asyncio.FIRST_COMPLETED)
            if attempt in done:
                exc = attempt.exception()
                if exc is not None:
                    raise self._connect_failure(exc, client_id) from exc
            else:
                raise self._connect_failure(None if closed in done else TimeoutError(), client_id)
        finally:
            if not attempt.done():
                # Closed by the peer, timed out, or this attempt was cancelled (stop):
                # connectAsync closes its socket when cancelled.
                attempt.cancel()
                await asyncio.gather(attempt, return_exceptions=True)
            if attempt.cancelled() or attempt.exception() is not None:
                self.disconnect()
            self.ib.client.apiError -= on_api_error
            messages, self._connect_messages = self._connect_messages, None
            if not closed.done():
                closed.cancel()
        for message in messages:
            if message.code in errors.SESSION_REFUSED:
                self.disconnect()
                raise ConnectFailed(FailureKind.UNAUTHORIZED, message.describe(), message.code)
        try:
            self.ib.reqMarketDataType(self.market_data_type)
            await self.heartbeat()
        except (TimeoutError, ConnectionError) as exc:
            self.disconnect()
            raise ConnectFailed(
                FailureKind.NO_HANDSHAKE,
                f"IB gateway at {self.endpoint} connected but did not answer reqCurrentTime within "
                f"{self.request_timeout:g} s",
            ) from exc
        log.info("IBKR API session started at %s as client id %d (server version %d)",
                 self.endpoint, client_id, self.ib.client.serverVersion(),
                 extra={"endpoint": self.endpoint, "client_id": client_id})

    def _connect_failure(self, exc: BaseException | None, client_id: int) -> ConnectFailed:
        messages = self._connect_messages or []
        for message in messages:
            if message.code == errors.CLIENT_ID_IN_USE:
                return ConnectFailed(FailureKind.CLIENT_ID_IN_USE,
                                     f"client id {client_id}: {message.describe()}", message.code)
        for message in messages:
            if message.code in errors.SESSION_REFUSED:
                return ConnectFailed(FailureKind.UNAUTHORIZED, message.describe(), message.code)
        where = f"IB gateway at {self.endpoint}"
        if exc is None:
            # What IB Gateway does while it is not logged in (and what `ib_async` reports as
            # "Peer closed connection. clientId N already in use?"): it takes the socket and
            # closes it after the handshake, with no error message.
            return ConnectFailed(
                FailureKind.UNAUTHORIZED,
                f"{where} closed the API session right after the handshake, without an error code: "
                "IB Gateway is not logged in (weekly re-authentication is due Sunday 01:00 ET), or "
                "refuses this client (API settings: trusted IPs, socket clients enabled)",
            )
        if isinstance(exc, TimeoutError):
            return ConnectFailed(
                FailureKind.NO_HANDSHAKE,
                f"{where} did not complete the API handshake within {self.connect_timeout:g} s",
            )
        if isinstance(exc, ConnectionRefusedError):
            return ConnectFailed(FailureKind.UNREACHABLE, f"{where}: connection refused "
                                 f"({errors.meaning(errors.CANNOT_CONNECT)})", errors.CANNOT_CONNECT)
        if isinstance(exc, ConnectionError):
            return ConnectFailed(FailureKind.CONNECTION_LOST, f"{where}: {exc or type(exc).__name__} while connecting")
        if isinstance(exc, OSError):
            return ConnectFailed(FailureKind.UNREACHABLE, f"{where}: {exc}", errors.CANNOT_CONNECT)
        return ConnectFailed(FailureKind.CONNECTION_LOST, f"{where}: {type(exc).__name__}: {exc}")

    def disconnect(self) -> None:
        self._closing = True
        try:
            if self.ib.client.isReady():
                self.ib.disconnect()
            else:
                # Mid-handshake `IB.disconnect()` raises asking for the statistics of a
                # session that never started; closing the socket is all there is to do.
                self.ib.client.disconnect()
        finally:
            self._closing = False

    async def heartbeat(self) -> None:
        sent = time.time()
        answer = await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), self.request_timeout)
        local = datetime.datetime.fromtimestamp((sent + time.time()) / 2, datetime.UTC)
        self._clock_offset = parsing.gateway_time(answer) - local

    def gateway_now(self) -> datetime.datetime:
        """The gateway's clock (the fake gateway's replays a past day)."""
        return datetime.datetime.now(datetime.UTC) + self._clock_offset

    def set_market_data_type(self, market_data_type: int) -> None:
        self.market_data_type = market_data_type
        if self.is_ready():
            self.ib.reqMarketDataType(market_data_type)

    # --- requests ----------------------------------------------------------------------

    async def qualify(self, symbol: str, source: str) -> Instrument | None:
        try:
            details = await self.ib.reqContractDetailsAsync(parsing.stock_request(symbol))
        except RequestError as exc:
            raise IbRequestError(parsing.ib_message(exc)) from None
        return parsing.instrument_from_details(symbol, details, source)

    async def daily_bars(self, instrument: Instrument, *, end: str, duration: str, what_to_show: str,
                         use_rth: bool, timeout: float) -> tuple[Bar, ...]:
        """`ib_async` cancels a historical request at its timeout and returns no bars: that
        empty answer becomes a `TimeoutError` here."""
        started = time.monotonic()
        try:
            bars = await self.ib.reqHistoricalDataAsync(
                parsing.contract_for(instrument), end, duration, "1 day", what_to_show, use_rth,
                formatDate=1, timeout=timeout,
            )
        except RequestError as exc:
            raise IbRequestError(parsing.ib_message(exc)) from None
        if not bars and time.monotonic() - started >= timeout * 0.99:
            raise TimeoutError(f"no historical data within {timeout:g} s")
        return parsing.bars_from_ib(instrument.symbol, bars)

    async def snapshot(self, instrument: Instrument) -> Quote | None:
        try:
            [ticker] = await self.ib.reqTickersAsync(parsing.contract_for(instrument))
        except RequestError as exc:
            raise IbRequestError(parsing.ib_message(exc)) from None
        return parsing.quote_from_ticker(instrument.symbol, ticker)

    def request_quotes(self, instrument: Instrument) -> bool:
        """Streaming market data for `instrument` on the current connection (asked again
        when already asked). False when not connected: ask again after the reconnect."""
        if instrument.con_id is None or not self.is_ready():
            return False
        if instrument.con_id in self._quoted:
            self.ib.cancelMktData(parsing.contract_for(self._quoted[instrument.con_id]))
        self._quoted[instrument.con_id] = instrument
        self.ib.reqMktData(parsing.contract_for(instrument), "", False, False)
        return True

    def cancel_quotes(self, instrument: Instrument) -> None:
        if instrument.con_id is None or self._quoted.pop(instrument.con_id, None) is None:
            return
        if self.is_ready():
            self.ib.cancelMktData(parsing.contract_for(instrument))

    def quotes_dropped(self) -> None:
        """The gateway dropped every subscription (error 1101): nothing to cancel."""
        self._quoted.clear()

    # --- events ------------------------------------------------------------------------

    def _on_error(self, req_id: int, code: int, text: str, contract: object) -> None:
        message = IbMessage(code=code, message=text, req_id=req_id)
        if self._connect_messages is not None:
            self._connect_messages.append(message)
        if req_id == -1:
            self.on_connection_message(message)
        else:
            self.on_request_message(message, parsing.con_id_of(contract))  # type: ignore[arg-type]

    def _on_disconnected(self) -> None:
        if not self._closing:
            self.on_lost(f"the connection to the IB gateway at {self.endpoint} was closed")

    def _on_tickers(self, tickers: set[Ticker]) -> None:
        for ticker in tickers:
            con_id = parsing.con_id_of(ticker.contract)
            instrument = self._quoted.get(con_id) if con_id is not None else None
            if instrument is None or con_id is None:
                continue
            quote = parsing.quote_from_ticker(instrument.symbol, ticker)
            if quote is not None:
                self.on_quote(con_id, quote)
