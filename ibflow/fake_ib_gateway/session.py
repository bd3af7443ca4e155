"""One API client connection: the handshake, startApi, and the requests the fake answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from .clock import ReplayClock
from .contracts import CONTRACT_FIELD_COUNT, ContractCatalog, ContractRef, Stock, contract_details_message
from .faults import Faults
from .framing import Field, FramingError, encode_message, read_hello, read_message
from .historical import (
    DAILY_BAR_SIZE,
    IB_BAR_SIZES,
    SERVED_WHAT_TO_SHOW,
    Duration,
    InvalidRequest,
    historical_data_message,
    parse_end_date,
)
from .market_data import MarketDataType, market_data_type_message, tick_messages, tick_req_params_message
from .pacing import HistoricalPacing, PacedRequest
from .protocol import (
    ERROR_TEXT,
    HMDS_PREFIX,
    MAX_SERVER_VERSION,
    MIN_SERVER_VERSION,
    NO_REQ_ID,
    PACING_VIOLATION_TEXT,
    VERSION_ADVANCED_REJECT,
    ErrorCode,
    Incoming,
    Outgoing,
)
from .sample_data import SampleData

log = logging.getLogger("ibflow.fake_ib_gateway")

FARM_STATUS = (ErrorCode.MARKET_DATA_FARM_OK, ErrorCode.HMDS_FARM_OK, ErrorCode.SEC_DEF_FARM_OK)
# Contract fields start after the message id and request id (plus a version for some messages).
HISTORICAL_CONTRACT_AT = 2
VERSIONED_CONTRACT_AT = 3


@dataclass
class GatewayContext:
    """What every connection of one gateway shares."""

    data: SampleData
    catalog: ContractCatalog
    faults: Faults
    pacing: HistoricalPacing | None
    replay: ReplayClock
    account: str
    order_ids: Iterator[int]
    client_id_taken: Callable[[int], bool]


def _contract_at(fields: list[str], start: int) -> ContractRef:
    return ContractRef.parse(fields[start:start + CONTRACT_FIELD_COUNT])


class ClientSession:
    def __init__(self, context: GatewayContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._context = context
        self._reader = reader
        self._writer = writer
        self.peer = writer.get_extra_info("peername")
        self.client_id: int | None = None
        self.server_version = 0
        self.market_data_type = MarketDataType.LIVE
        self.subscriptions: dict[int, str] = {}
        self._handlers: dict[Incoming, Callable[[list[str]], Awaitable[None]]] = {
            Incoming.REQ_MKT_DATA: self._req_mkt_data,
            Incoming.CANCEL_MKT_DATA: self._cancel_mkt_data,
            Incoming.REQ_CONTRACT_DETAILS: self._req_contract_details,
            Incoming.REQ_HISTORICAL_DATA: self._req_historical_data,
            Incoming.REQ_CURRENT_TIME: self._req_current_time,
            Incoming.REQ_MARKET_DATA_TYPE: self._req_market_data_type,
            Incoming.REQ_POSITIONS: self._answer(lambda f: [Outgoing.POSITION_END, 1]),
            Incoming.REQ_OPEN_ORDERS: self._answer(lambda f: [Outgoing.OPEN_ORDER_END, 1]),
            Incoming.REQ_ALL_OPEN_ORDERS: self._answer(lambda f: [Outgoing.OPEN_ORDER_END, 1]),
            Incoming.REQ_COMPLETED_ORDERS: self._answer(lambda f: [Outgoing.COMPLETED_ORDERS_END]),
            Incoming.REQ_EXECUTIONS: self._answer(lambda f: [Outgoing.EXECUTION_DATA_END, 1, int(f[2])]),
            Incoming.REQ_ACCOUNT_UPDATES_MULTI: self._answer(
                lambda f: [Outgoing.ACCOUNT_UPDATE_MULTI_END, 1, int(f[2])]
            ),
            Incoming.REQ_ACCOUNT_SUMMARY: self._answer(lambda f: [Outgoing.ACCOUNT_SUMMARY_END, 1, int(f[2])]),
            Incoming.REQ_POSITIONS_MULTI: self._answer(lambda f: [Outgoing.POSITION_MULTI_END, 1, int(f[2])]),
            Incoming.REQ_IDS: self._answer(lambda f: [Outgoing.NEXT_VALID_ID, 1, next(context.order_ids)]),
            Incoming.REQ_MANAGED_ACCTS: self._answer(lambda f: [Outgoing.MANAGED_ACCTS, 1, context.account]),
            Incoming.REQ_ACCOUNT_UPDATES: self._req_account_updates,
        }

    @property
    def label(self) -> str:
        return f"client {self.client_id}" if self.client_id is not None else f"connection {self.peer}"

    async def run(self) -> None:
        log.info("connection from %s", self.peer)
        try:
            if await self._handshake():
                while not self._writer.is_closing():
                    await self._dispatch(await read_message(self._reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except FramingError as exc:
            log.warning("%s: not the TWS API protocol (%s), closing", self.label, exc)
        finally:
            log.info("%s disconnected", self.label)
            self.close()

    def close(self) -> None:
        self._writer.close()

    def drop(self) -> None:
        """Drop the socket without flushing what is queued, as a network failure does."""
        self._writer.transport.abort()

    async def notify(self, code: ErrorCode) -> None:
        """A connection-wide message (reqId -1); a client that is already gone is skipped."""
        try:
            await self._error(NO_REQ_ID, code)
        except ConnectionError:
            log.info("%s: gone before %s could be sent", self.label, code.name)

    def lose_market_data(self) -> None:
        if self.subscriptions:
            log.info("%s: market data subscriptions lost: %s", self.label, sorted(self.subscriptions))
        self.subscriptions.clear()

    async def _send(self, fields: list[Field]) -> None:
        self._writer.write(encode_message(fields))
        await self._writer.drain()

    async def _error(self, req_id: int, code: ErrorCode, text: str | None = None) -> None:
        message: list[Field] = [Outgoing.ERR_MSG, 2, req_id, int(code), text or ERROR_TEXT[code]]
        if self.server_version >= VERSION_ADVANCED_REJECT:
            message.append("")
        await self._send(message)

    async def _handshake(self) -> bool:
        hello = await read_hello(self._reader)
        version = min(hello.max_version, MAX_SERVER_VERSION)
        if version < MIN_SERVER_VERSION:
            log.warning("%s offers versions %d..%d, the fake needs %d or later; closing",
                        self.label, hello.min_version, hello.max_version, MIN_SERVER_VERSION)
            return False
        self.server_version = version
        connection_time = self._context.replay.now().strftime("%Y%m%d %H:%M:%S %Z")
        await self._send([version, connection_time])
        log.info("%s: client offers versions %d..%d, serving version %d",
                 self.label, hello.min_version, hello.max_version, version)
        while True:
            fields = await read_message(self._reader)
            if fields and fields[0] == str(int(Incoming.START_API)):
                return await self._start_api(fields)
            log.warning("%s: request before startApi ignored: %s", self.label, ",".join(fields))

    async def _start_api(self, fields: list[str]) -> bool:
        try:
            client_id = int(fields[2])
        except (IndexError, ValueError):
            log.warning("%s: malformed startApi %s, closing", self.label, ",".join(fields))
            return False
        faults = self._context.faults
        if faults.login_refused:
            log.warning("%s: startApi for client id %d refused (login-refused fault), closing", self.label, client_id)
            return False
        if faults.client_id_in_use or self._context.client_id_taken(client_id):
            log.warning("%s: client id %d already in use, closing", self.label, client_id)
            await self._error(NO_REQ_ID, ErrorCode.CLIENT_ID_IN_USE)
            return False
        self.client_id = client_id
        log.info("%s: API started", self.label)
        await self._send([Outgoing.MANAGED_ACCTS, 1, self._context.account])
        await self._send([Outgoing.NEXT_VALID_ID, 1, next(self._context.order_ids)])
        for code in FARM_STATUS:
            await self._error(NO_REQ_ID, code)
        return True

    async def _dispatch(self, fields: list[str]) -> None:
        try:
            message = Incoming(int(fields[0]))
        except (ValueError, IndexError):
            log.warning("%s: unsupported message ignored: %s", self.label, ",".join(fields))
            return
        log.info("%s: %s %s", self.label, message.name, ",".join(fields[1:]))
        handler = self._handlers.get(message)
        if handler is None:
            return  # IBKR answers cancels and settings with nothing
        try:
            await handler(fields)
        except (ValueError, IndexError) as exc:
            log.warning("%s: cannot parse %s: %s", self.label, message.name, exc)
            await self._error(
                NO_REQ_ID, ErrorCode.REQUEST_PARSE_ERROR,
                f"Error reading request:Message id {int(message)}. Unable to parse data. {exc}",
            )

    def _answer(self, reply: Callable[[list[str]], list[Field]]) -> Callable[[list[str]], Awaitable[None]]:
        async def handler(fields: list[str]) -> None:
            await self._send(reply(fields))

        return handler

    def _resolve(self, ref: ContractRef) -> Stock | None:
        stock = self._context.catalog.resolve(ref)
        if stock and self._context.faults.is_unknown(stock.symbol):
            log.info("%s: %s reported unknown (unknown-contract fault)", self.label, stock.symbol)
            return None
        return stock

    async def _req_account_updates(self, fields: list[str]) -> None:
        subscribe, account = fields[2] == "1", fields[3]
        if subscribe:
            await self._send([Outgoing.ACCT_DOWNLOAD_END, 1, account or self._context.account])

    async def _req_current_time(self, fields: list[str]) -> None:
        await self._send([Outgoing.CURRENT_TIME, 1, self._context.replay.epoch_seconds()])

    async def _req_market_data_type(self, fields: list[str]) -> None:
        self.market_data_type = MarketDataType(int(fields[2]))
        # IBKR tells every live subscription which kind of data it now gets.
        for req_id in self.subscriptions:
            await self._send(market_data_type_message(req_id, self.market_data_type))

    async def _req_contract_details(self, fields: list[str]) -> None:
        req_id = int(fields[2])
        ref = _contract_at(fields, VERSIONED_CONTRACT_AT)
        if self._context.faults.silence:
            log.info("%s: contract details %d for %s left unanswered (silence fault)", self.label, req_id, ref.label)
            return
        stock = self._resolve(ref)
        if stock is None:
            await self._error(req_id, ErrorCode.NO_SECURITY_DEFINITION)
            return
        await self._send(
            contract_details_message(req_id, stock, ref.exchange, self._context.replay.replay_date, self.server_version)
        )
        await self._send([Outgoing.CONTRACT_DATA_END, 1, req_id])

    async def _req_historical_data(self, fields: list[str]) -> None:
        req_id = int(fields[1])
        ref = _contract_at(fields, HISTORICAL_CONTRACT_AT)
        end_text, bar_size, duration_text, _use_rth, what_to_show, _format_date = fields[15:21]
        faults = self._context.faults
        if faults.drop_socket_on_historical:
            log.warning("%s: dropping the connection on historical request %d (drop-socket fault)", self.label, req_id)
            self.drop()
            return
        if faults.silence:
            log.info("%s: historical request %d left unanswered (silence fault)", self.label, req_id)
            return
        if faults.pacing_violation:
            await self._error(req_id, ErrorCode.HISTORICAL_DATA_SERVICE, PACING_VIOLATION_TEXT)
            return
        try:
            end = parse_end_date(end_text, self._context.replay.replay_date)
            duration = Duration.parse(duration_text)
            if bar_size not in IB_BAR_SIZES:
                raise InvalidRequest(f"Historical data bar size setting [{bar_size}] is invalid")
        except InvalidRequest as exc:
            await self._error(req_id, ErrorCode.REQUEST_VALIDATION, f"Error validating request.-'bH' : cause - {exc}")
            return
        stock = self._resolve(ref)
        if stock is None:
            await self._error(req_id, ErrorCode.NO_SECURITY_DEFINITION)
            return
        exchange = ref.exchange.upper() or "SMART"
        what = what_to_show.upper()
        if self._context.pacing and (
            reason := self._context.pacing.violation(
                PacedRequest(
                    identity=(stock.con_id, *fields[HISTORICAL_CONTRACT_AT + CONTRACT_FIELD_COUNT:]),
                    series=(stock.con_id, exchange, what),
                    weight=2 if what == "BID_ASK" else 1,
                )
            )
        ):
            log.warning("%s: historical request %d violates pacing: %s", self.label, req_id, reason)
            await self._error(req_id, ErrorCode.HISTORICAL_DATA_SERVICE, PACING_VIOLATION_TEXT)
            return
        replay_date = self._context.replay.replay_date
        bars = duration.select(self._context.data.bars(stock.symbol), end)
        if bar_size != DAILY_BAR_SIZE or what not in SERVED_WHAT_TO_SHOW:
            why = f"the fake gateway replays {DAILY_BAR_SIZE} bars of {', '.join(sorted(SERVED_WHAT_TO_SHOW))}"
        elif end > replay_date:
            # after the replay's "today" nothing has happened yet
            why = f"the replay ends at {replay_date:%Y%m%d}; {end:%Y%m%d} has not happened yet"
        elif not bars:
            why = f"no bars in the {duration_text.strip()} up to {end:%Y%m%d}"
        else:
            await self._send(historical_data_message(req_id, bars, bars[0].day, end, what))
            return
        await self._error(
            req_id, ErrorCode.HISTORICAL_DATA_SERVICE,
            f"{HMDS_PREFIX}HMDS query returned no data: {stock.symbol}@{exchange} {what_to_show} ({why})",
        )

    async def _req_mkt_data(self, fields: list[str]) -> None:
        req_id = int(fields[2])
        stock = self._resolve(_contract_at(fields, VERSIONED_CONTRACT_AT))
        if stock is None:
            await self._error(req_id, ErrorCode.NO_SECURITY_DEFINITION)
            return
        rest = fields[VERSIONED_CONTRACT_AT + CONTRACT_FIELD_COUNT:]
        # A delta-neutral contract adds its conId, delta and price after the flag.
        generic_ticks_at = 4 if rest[0] == "1" else 1
        snapshot = rest[generic_ticks_at + 1] == "1"
        data_type = self.market_data_type
        if self._context.faults.no_market_data_permission:
            if not data_type.is_delayed:
                await self._error(req_id, ErrorCode.NOT_SUBSCRIBED)
                return
            await self._error(req_id, ErrorCode.DELAYED_DATA_DISPLAYED)
        await self._send(tick_req_params_message(req_id))
        await self._send(market_data_type_message(req_id, data_type))
        for message in tick_messages(req_id, self._context.data.bars(stock.symbol), data_type):
            await self._send(message)
        if snapshot:
            await self._send([Outgoing.TICK_SNAPSHOT_END, 1, req_id])
        else:
            self.subscriptions[req_id] = stock.symbol

    async def _cancel_mkt_data(self, fields: list[str]) -> None:
        self.subscriptions.pop(int(fields[2]), None)
