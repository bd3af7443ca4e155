"""`IbkrProvider`: market data from TWS / IB Gateway (or the fake gateway) via `ib_async`.

Every request waits for the connection supervisor (bounded), takes a pacing slot when it
is a historical one, and runs under a timeout; nothing here can hang a run. IBKR's
answers become `MarketDataError(symbol, message, code)` with IBKR's code and what it
means, logged where they happen. A request cut off by a dropped socket or by error 1101
(data lost) is asked again, once, after the reconnect.

Daily bars already fetched are kept (`IBKR_BAR_CACHE_ENTRIES`), keyed by conId, end
date, duration, data type and RTH, as long as the bars can no longer change (the
session they end in has closed), so a rerun does not ask IBKR again. Bars that end at a
past date (a run as of that date) come from one history per contract, fetched up to the
last closed session and sliced per date: a backfill of many dates asks IBKR once per
symbol, not once per date, and stays far inside its pacing limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from services.signals.market_data.ibkr import errors
from services.signals.market_data.ibkr.client import DELAYED, LIVE, IbGatewayClient, IbRequestError
from services.signals.market_data.ibkr.errors import IbMessage
from services.signals.market_data.ibkr.maintenance import NEW_YORK, MaintenanceCalendar
from services.signals.market_data.ibkr.pacing import PacingDelayTooLong, PacingLimiter
from services.signals.market_data.ibkr.settings import IbkrSettings
from services.signals.market_data.ibkr.supervisor import (
    ConnectionSupervisor,
    NotReady,
    ReconnectPolicy,
    SilencePolicy,
    WallClock,
    utc_now,
)
from services.signals.market_data.models import Bar, BarSeries, Instrument, MarketDataError, ProviderHealth, Quote

log = logging.getLogger(__name__)

T = TypeVar("T")
V = TypeVar("V")
SESSION_CLOSE = datetime.time(16, 0)
# A gateway clock this far from ours serves a replay (the fake gateway), not today's market.
REPLAY_CLOCK_OFFSET = datetime.timedelta(days=1)
QUOTE_BUFFER = 1000
HISTORICAL = "historical daily bars"
DETAILS = "contract details"
SNAPSHOT = "market data snapshot"


def ibkr_duration(days: int) -> str:
    """An IBKR duration covering at least `days` calendar days (beyond 365 days IBKR
    wants years)."""
    return f"{days} D" if days <= 365 else f"{math.ceil(days / 365)} Y"


def ibkr_end(end: datetime.date | None) -> str:
    """The request's `endDateTime`: the end of that New York day, or "" for now."""
    return "" if end is None else f"{end:%Y%m%d} 23:59:59 US/Eastern"


class _DataLost(Exception):
    """IBKR reported 1101 while the request was open: its answer will not come."""


@dataclass(frozen=True)
class _Paced:
    request_key: Hashable
    contract_key: Hashable
    cost: int


@dataclass(eq=False)
class _QuoteStream:
    con_ids: frozenset[int]
    queue: asyncio.Queue[Quote] = field(default_factory=lambda: asyncio.Queue(maxsize=QUOTE_BUFFER))

    def offer(self, quote: Quote) -> None:
        if self.queue.full():
            self.queue.get_nowait()  # a slow reader gets the newest quotes
        self.queue.put_nowait(quote)


class BarCache(Generic[V]):
    """Least recently used bar series, at most `entries` of them."""

    def __init__(self, entries: int) -> None:
        self._entries = entries
        self._bars: OrderedDict[Hashable, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._bars)

    def get(self, key: Hashable) -> V | None:
        bars = self._bars.get(key)
        if bars is not None:
            self._bars.move_to_end(key)
        return bars

    def put(self, key: Hashable, bars: V) -> None:
        if self._entries <= 0:
            return
        self._bars[key] = bars
        self._bars.move_to_end(key)
        while len(self._bars) > self._entries:
            self._bars.popitem(last=False)


@dataclass(frozen=True)
class BarHistory:
    """A contract's final daily bars, fetched for the days after `since` up to `until`."""

    since: datetime.date
    until: datetime.date
    bars: tuple[Bar, ...]

    def covers(self, since: datetime.date, until: datetime.date) -> bool:
        return self.since <= since and until <= self.until


class IbkrProvider:
    name = "ibkr"

    def __init__(
        self,
        settings: IbkrSettings | None = None,
        *,
        pacing: PacingLimiter | None = None,
        maintenance: MaintenanceCalendar | None = None,
        clock: WallClock = utc_now,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings = settings or IbkrSettings()
        self._client = IbGatewayClient(
            host=settings.ibkr_host,
            port=settings.ibkr_port,
            connect_timeout=settings.ibkr_connect_timeout_seconds,
            request_timeout=settings.ibkr_request_timeout_seconds,
            market_data_type=DELAYED if settings.ibkr_market_data_type == "delayed" else LIVE,
        )
        self._supervisor = ConnectionSupervisor(
            self._client,
            endpoint=self._client.endpoint,
            client_ids=settings.ibkr_client_ids,
            reconnect=ReconnectPolicy(
                initial_delay=settings.ibkr_reconnect_initial_delay_seconds,
                max_delay=settings.ibkr_reconnect_max_delay_seconds,
                max_attempts=settings.ibkr_max_reconnect_attempts,
            ),
            silence=SilencePolicy(limit=settings.ibkr_unanswered_limit, pause=settings.ibkr_unanswered_pause_seconds),
            heartbeat_interval=settings.ibkr_heartbeat_interval_seconds,
            maintenance=maintenance,
            overrun_grace=settings.ibkr_maintenance_grace_seconds,
            clock=clock,
            rng=rng,
        )
        self._client.on_connection_message = self._supervisor.ib_message
        self._client.on_lost = self._supervisor.connection_lost
        self._client.on_request_message = self._on_request_message
        self._client.on_quote = self._on_quote
        self._supervisor.add_ready_hook(self._after_connect)
        self._supervisor.add_data_lost_hook(self._after_data_lost)
        self._pacing = pacing or PacingLimiter()
        self._cache: BarCache[tuple[Bar, ...] | BarHistory] = BarCache(settings.ibkr_bar_cache_entries)
        self._history_locks: dict[int, asyncio.Lock] = {}
        self._instruments: dict[str, Instrument] = {}
        self._streams: set[_QuoteStream] = set()
        self._subscribed: dict[int, Instrument] = {}
        self._subscribers: dict[int, int] = {}
        # auto mode: None until IBKR has said whether live market data is permitted.
        self._live_permitted: bool | None = None
        self._entitlement_lock = asyncio.Lock()
        self._in_flight: set[asyncio.Future[None]] = set()

    @property
    def supervisor(self) -> ConnectionSupervisor:
        return self._supervisor

    @property
    def pacing(self) -> PacingLimiter:
        return self._pacing

    @property
    def delayed(self) -> bool:
        """Whether the data this provider serves is delayed rather than live."""
        mode = self._settings.ibkr_market_data_type
        return mode == "delayed" or (mode == "auto" and self._live_permitted is False)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, waiting (at most about IBKR_CONNECT_TIMEOUT_SECONDS) for the first
        attempt only: a gateway that is down, slow or not logged in leaves the service up,
        connecting in the background."""
        self._supervisor.start()
        try:
            connected = await self._supervisor.first_attempt(self._settings.ibkr_connect_timeout_seconds + 1)
        except TimeoutError:
            connected = False
        if not connected:
            health = self._supervisor.health()
            log.warning("IBKR provider started without a connection (%s); connecting in the background",
                        health.detail["reason"], extra={"ibkr_code": health.detail.get("code"),
                                                         "ibkr_state": health.state,
                                                         "endpoint": self._client.endpoint})

    async def stop(self) -> None:
        await self._supervisor.stop()

    def health(self) -> ProviderHealth:
        health = self._supervisor.health()
        detail = {
            **health.detail,
            "provider": self.name,
            "market_data_type": self._settings.ibkr_market_data_type,
            "delayed": self.delayed,
            "pacing": self._pacing.status(),
            "cached_bar_series": len(self._cache),
            "quote_subscriptions": len(self._subscribed),
        }
        return ProviderHealth(state=health.state, detail=detail)

    # --- requests ----------------------------------------------------------------------

    async def qualify(self, symbols: Iterable[str]) -> dict[str, Instrument | MarketDataError]:
        unique = list(dict.fromkeys(symbols))
        results = await asyncio.gather(*(self._qualify_one(symbol) for symbol in unique))
        return dict(zip(unique, results, strict=True))

    async def _qualify_one(self, symbol: str) -> Instrument | MarketDataError:
        try:
            instrument = await self._call(
                symbol, DETAILS, lambda timeout: asyncio.wait_for(self._client.qualify(symbol, self.name), timeout)
            )
        except MarketDataError as exc:
            return exc
        if instrument is None:
            return self._failed(symbol, DETAILS, f"{errors.meaning(errors.NO_SECURITY_DEFINITION)}: "
                                f"IBKR has no US stock {symbol} (SMART, USD)", errors.NO_SECURITY_DEFINITION)
        self._instruments[symbol] = instrument
        return instrument

    async def daily_bars(
        self, instrument: Instrument, *, days: int, end: datetime.date | None = None
    ) -> BarSeries:
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        if instrument.con_id is None:
            raise MarketDataError(instrument.symbol, f"not an IBKR instrument (no conId; source {instrument.source}): "
                                  "qualify it with the IBKR provider first")
        s = self._settings
        what, rth, duration = s.ibkr_what_to_show, s.ibkr_use_rth, ibkr_duration(days)
        gateway_now = self._client.gateway_now().astimezone(NEW_YORK)
        if end is not None and self._final(end, gateway_now):
            bars = await self._history(instrument, since=end - datetime.timedelta(days=days), until=end,
                                       gateway_now=gateway_now)
        else:
            key = (instrument.con_id, end or f"latest as of {gateway_now.date()}", duration, what, rth)
            cached = self._cache.get(key)
            if isinstance(cached, tuple):
                bars = cached
                log.info("IBKR %s for %s: %d bars from the cache", HISTORICAL, instrument.symbol, len(bars),
                         extra={"symbol": instrument.symbol, "bars": len(bars), "cached": True})
            else:
                bars = await self._request_bars(instrument, end_text=ibkr_end(end), duration=duration)
                if self._final(end, gateway_now):
                    self._cache.put(key, bars)
        last = end or (bars[-1].date if bars else gateway_now.date())
        start = last - datetime.timedelta(days=days)
        window = tuple(bar for bar in bars if start < bar.date <= last)
        if not window:
            raise self._failed(instrument.symbol, HISTORICAL,
                               f"IBKR returned no daily bars between {start} and {last}", None)
        return BarSeries(
            instrument=instrument,
            bars=window,
            source=f"IBKR {what} daily bars via {self._client.endpoint}",
            delayed=self.delayed,
            replayed=abs(self._client.gateway_now() - utc_now()) > REPLAY_CLOCK_OFFSET,
        )

    async def _request_bars(self, instrument: Instrument, *, end_text: str, duration: str) -> tuple[Bar, ...]:
        s = self._settings
        what, rth = s.ibkr_what_to_show, s.ibkr_use_rth
        await self._check_entitlement(instrument)
        bars = await self._call(
            instrument.symbol,
            HISTORICAL,
            lambda timeout: self._client.daily_bars(
                instrument, end=end_text, duration=duration, what_to_show=what, use_rth=rth, timeout=timeout
            ),
            paced=_Paced(
                request_key=(instrument.con_id, end_text, duration, what, rth),
                contract_key=(instrument.con_id, instrument.exchange, what),
                cost=2 if what == "BID_ASK" else 1,
            ),
        )
        log.info("IBKR %s for %s: %d bars %s .. %s", HISTORICAL, instrument.symbol, len(bars),
                 bars[0].date if bars else "-", bars[-1].date if bars else "-",
                 extra={"symbol": instrument.symbol, "bars": len(bars), "duration": duration,
                        "end": end_text or "now", "what_to_show": what})
        return bars

    async def _history(
        self, instrument: Instrument, *, since: datetime.date, until: datetime.date, gateway_now: datetime.datetime
    ) -> tuple[Bar, ...]:
        """The contract's final bars after `since` up to at least `until` (a closed session),
        from its history: fetched up to the last closed session when it does not cover them."""
        assert instrument.con_id is not None
        s = self._settings
        key = ("history", instrument.con_id, s.ibkr_what_to_show, s.ibkr_use_rth)
        # one fetch per contract even when several runs ask at once
        async with self._history_locks.setdefault(instrument.con_id, asyncio.Lock()):
            history = self._cache.get(key)
            if isinstance(history, BarHistory) and history.covers(since, until):
                log.info("IBKR %s for %s up to %s: from the history fetched up to %s", HISTORICAL,
                         instrument.symbol, until, history.until,
                         extra={"symbol": instrument.symbol, "end": until.isoformat(), "cached": True})
                return history.bars
            closed = self._last_closed_session(gateway_now)
            if isinstance(history, BarHistory):
                since = min(since, history.since)
            days = (closed - since).days
            bars = await self._request_bars(instrument, end_text="", duration=ibkr_duration(days))
            history = BarHistory(since=since, until=closed, bars=tuple(b for b in bars if b.date <= closed))
            self._cache.put(key, history)
            return history.bars

    @staticmethod
    def _last_closed_session(gateway_now: datetime.datetime) -> datetime.date:
        """The latest date whose bar can no longer change."""
        today = gateway_now.date()
        closed = gateway_now.time() >= SESSION_CLOSE or gateway_now.weekday() >= 5
        return today if closed else today - datetime.timedelta(days=1)

    @staticmethod
    def _final(end: datetime.date | None, gateway_now: datetime.datetime) -> bool:
        """Whether bars ending at `end` can no longer change."""
        today = gateway_now.date()
        if end is not None and end < today:
            return True
        closed = gateway_now.time() >= SESSION_CLOSE or gateway_now.weekday() >= 5
        return closed and (end is None or end <= today)

    def stream_quotes(self, instruments: Iterable[Instrument]) -> AsyncIterator[Quote]:
        return self._stream_quotes(tuple(instruments))

    async def _stream_quotes(self, instruments: tuple[Instrument, ...]) -> AsyncIterator[Quote]:
        streamable = tuple(i for i in instruments if i.con_id is not None)
        for instrument in instruments:
            if instrument.con_id is None:
                log.warning("no IBKR quotes for %s: not an IBKR instrument (no conId)", instrument.symbol,
                            extra={"symbol": instrument.symbol})
        stream = _QuoteStream(frozenset(i.con_id for i in streamable if i.con_id is not None))
        self._streams.add(stream)
        for instrument in streamable:
            self._subscribe(instrument)
        try:
            while True:
                yield await stream.queue.get()
        finally:
            self._streams.discard(stream)
            for instrument in streamable:
                self._unsubscribe(instrument)

    # --- one request ---------------------------------------------------------------------

    async def _call(
        self, symbol: str, what: str, request: Callable[[float], Awaitable[T]], *, paced: _Paced | None = None
    ) -> T:
        """Wait for the connection, pace, send with a timeout, and map every outcome;
        a request cut off by a lost connection or lost data is sent once more."""
        timeout = self._settings.ibkr_request_timeout_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._supervisor.wait_ready(timeout)
            except NotReady as exc:
                raise self._failed(symbol, what, exc.message, exc.code) from None
            try:
                async with self._slot(paced):
                    # The request times itself out; this only guards against it not doing so.
                    result = await self._unless_data_lost(asyncio.wait_for(request(timeout), timeout + 1))
            except PacingDelayTooLong as exc:
                raise self._failed(
                    symbol, what,
                    f"IBKR pacing: {exc.reason}; the next slot is {exc.wait_seconds:.0f} s away, longer than "
                    f"IBKR_PACING_MAX_WAIT_SECONDS ({self._settings.ibkr_pacing_max_wait_seconds:g} s)",
                    exc.code,
                ) from None
            except IbRequestError as exc:
                self._supervisor.request_answered()
                raise self._refused(symbol, what, exc.ib_message) from None
            except TimeoutError:
                self._supervisor.request_unanswered(f"{what} for {symbol}", timeout)
                raise self._failed(symbol, what, f"no answer from IB gateway within {timeout:g} s", None) from None
            except (ConnectionError, _DataLost) as exc:
                data_lost = isinstance(exc, _DataLost)
                lost = ("IBKR reported market data lost (1101)" if data_lost
                        else "the connection to the IB gateway dropped")
                code = errors.RESTORED_DATA_LOST if data_lost else None
                if attempt == 1:
                    log.warning("IBKR %s for %s: %s during the request; asking again", what, symbol, lost,
                                extra={"symbol": symbol, "ibkr_code": code})
                    continue
                raise self._failed(symbol, what, f"{lost} during the request, and again when asked again", code) \
                    from None
            self._supervisor.request_answered()
            if paced is not None:
                self._pacing.record_success()
            return result

    def _slot(self, paced: _Paced | None) -> contextlib.AbstractAsyncContextManager[None]:
        if paced is None:
            return contextlib.nullcontext()
        return self._pacing.acquire(paced.request_key, paced.contract_key, paced.cost,
                                    max_wait=self._settings.ibkr_pacing_max_wait_seconds)

    async def _unless_data_lost(self, request: Awaitable[T]) -> T:
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight.add(lost)
        task = asyncio.ensure_future(request)
        try:
            done, _ = await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            raise _DataLost()
        finally:
            self._in_flight.discard(lost)
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _refused(self, symbol: str, what: str, message: IbMessage) -> MarketDataError:
        text = f"{message.meaning}: {message.message}"
        if errors.is_pacing_violation(message.code, message.message):
            pause = self._pacing.record_violation()
            text += f"; historical requests paused for {pause:g} s"
        return self._failed(symbol, what, text, message.code)

    def _failed(self, symbol: str, what: str, message: str, code: int | None) -> MarketDataError:
        label = f"IBKR {code} ({errors.meaning(code, message)})" if code is not None else "IBKR"
        log.warning("%s: %s for %s failed: %s", label, what, symbol, message,
                    extra={"symbol": symbol, "request": what, "ibkr_code": code,
                           "meaning": errors.meaning(code, message) if code is not None else message})
        return MarketDataError(symbol, message, code)

    # --- market data permission ------------------------------------------------------------

    async def _check_entitlement(self, instrument: Instrument) -> None:
        """auto mode: learn once whether live data is permitted, from a snapshot; error 354
        switches to delayed data."""
        if self._settings.ibkr_market_data_type != "auto" or self._live_permitted is not None:
            return
        async with self._entitlement_lock:
            if self._live_permitted is not None:
                return
            try:
                quote = await self._call(instrument.symbol, SNAPSHOT, lambda timeout: asyncio.wait_for(
                    self._client.snapshot(instrument), timeout))
            except MarketDataError as exc:
                if exc.code in errors.NO_MARKET_DATA_PERMISSION:
                    self._use_delayed(IbMessage(exc.code, exc.message))
                return
            if self._live_permitted is None:
                self._live_permitted = not (quote and quote.delayed)

    def _use_delayed(self, message: IbMessage) -> None:
        if self._settings.ibkr_market_data_type != "auto" or self._live_permitted is False:
            return
        self._live_permitted = False
        log.warning("IBKR %d (%s): live market data is not permitted; using delayed market data "
                    "(reqMarketDataType 3) from now on, and marking it delayed",
                    message.code, message.meaning,
                    extra={"ibkr_code": message.code, "meaning": message.meaning, "market_data_type": DELAYED})
        self._client.set_market_data_type(DELAYED)
        for instrument in self._subscribed.values():
            self._client.request_quotes(instrument)

    def _on_request_message(self, message: IbMessage, con_id: int | None) -> None:
        if con_id is None or con_id not in self._subscribed:
            return
        if errors.is_no_permission(message.code, message.message):
            self._use_delayed(message)
        elif message.code == errors.DELAYED_DATA_DISPLAYED and self._live_permitted is None:
            self._live_permitted = False

    # --- subscriptions and reconnects ------------------------------------------------------

    def _subscribe(self, instrument: Instrument) -> None:
        assert instrument.con_id is not None
        count = self._subscribers.get(instrument.con_id, 0)
        self._subscribers[instrument.con_id] = count + 1
        self._subscribed[instrument.con_id] = instrument
        if count == 0:
            self._client.request_quotes(instrument)

    def _unsubscribe(self, instrument: Instrument) -> None:
        assert instrument.con_id is not None
        count = self._subscribers.get(instrument.con_id, 0) - 1
        if count > 0:
            self._subscribers[instrument.con_id] = count
            return
        self._subscribers.pop(instrument.con_id, None)
        self._subscribed.pop(instrument.con_id, None)
        self._client.cancel_quotes(instrument)

    def _on_quote(self, con_id: int, quote: Quote) -> None:
        for stream in self._streams:
            if con_id in stream.con_ids:
                stream.offer(quote)

    async def _after_connect(self) -> None:
        """Re-qualify what is known and subscribe again: `ib_async` re-subscribes nothing."""
        if self._instruments:
            before = dict(self._instruments)
            results = await self.qualify(sorted(before))
            for symbol, result in results.items():
                if isinstance(result, Instrument) and result.con_id != before[symbol].con_id:
                    log.warning("IBKR: %s is conId %s now (was %s)", symbol, result.con_id, before[symbol].con_id,
                                extra={"symbol": symbol})
        for instrument in list(self._subscribed.values()):
            self._client.request_quotes(instrument)
        if self._subscribed:
            log.info("IBKR: quotes for %s requested again after the reconnect",
                     ", ".join(sorted(i.symbol for i in self._subscribed.values())))

    async def _after_data_lost(self) -> None:
        """1101: open requests will not be answered and subscriptions are gone."""
        for lost in list(self._in_flight):
            if not lost.done():
                lost.set_result(None)
        self._client.quotes_dropped()
        for instrument in list(self._subscribed.values()):
            self._client.request_quotes(instrument)
        if self._subscribed:
            log.info("IBKR: quotes for %s requested again after 1101 (data lost)",
                     ", ".join(sorted(i.symbol for i in self._subscribed.values())))
