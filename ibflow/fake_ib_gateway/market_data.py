"""Market-data ticks replayed from a stock's last daily bar.

The replayed market is closed, so each subscription gets one set of ticks and no updates:
last = the bar's close, open/high/low/volume from the bar, close = the previous bar's close
(IBKR's "close" tick is the prior session's), and a one-tick-wide quote around the last price
(the sample data has no quotes).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from .contracts import MIN_TICK
from .framing import Field
from .protocol import Outgoing
from .sample_data import DailyBar

QUOTE_SIZE = 100
# Enough for the data's 4-decimal prices, few enough to drop float noise from the quote's ± one tick.
PRICE_DECIMALS = 6
LAST_SIZE = 100
BBO_EXCHANGE = "9c0001"
SNAPSHOT_PERMISSIONS = 3
# Tick attribute bit 0: the quote can be auto-executed.
CAN_AUTO_EXECUTE = 1


class MarketDataType(IntEnum):
    LIVE = 1
    FROZEN = 2
    DELAYED = 3
    DELAYED_FROZEN = 4

    @property
    def is_delayed(self) -> bool:
        return self in (MarketDataType.DELAYED, MarketDataType.DELAYED_FROZEN)


class Tick(IntEnum):
    BID = 1
    ASK = 2
    LAST = 4
    HIGH = 6
    LOW = 7
    VOLUME = 8
    CLOSE = 9
    OPEN = 14


# Delayed data uses its own tick ids (IBKR tick types 66-76).
DELAYED_TICK = {
    Tick.BID: 66, Tick.ASK: 67, Tick.LAST: 68, Tick.HIGH: 72, Tick.LOW: 73,
    Tick.VOLUME: 74, Tick.CLOSE: 75, Tick.OPEN: 76,
}


def tick_messages(req_id: int, bars: Sequence[DailyBar], data_type: MarketDataType) -> list[list[Field]]:
    """`tickPrice` (msg 1) and `tickSize` (msg 2) messages for the newest bar of `bars`."""
    bar = bars[-1]
    previous_close = bars[-2].close if len(bars) > 1 else bar.close

    def tick_id(tick: Tick) -> int:
        return DELAYED_TICK[tick] if data_type.is_delayed else int(tick)

    def price(tick: Tick, value: float, size: int = 0, attributes: int = 0) -> list[Field]:
        return [Outgoing.TICK_PRICE, 6, req_id, tick_id(tick), value, size, attributes]

    return [
        price(Tick.BID, round(bar.close - MIN_TICK, PRICE_DECIMALS), QUOTE_SIZE, CAN_AUTO_EXECUTE),
        price(Tick.ASK, round(bar.close + MIN_TICK, PRICE_DECIMALS), QUOTE_SIZE, CAN_AUTO_EXECUTE),
        price(Tick.LAST, bar.close, LAST_SIZE),
        price(Tick.HIGH, bar.high),
        price(Tick.LOW, bar.low),
        price(Tick.OPEN, bar.open),
        price(Tick.CLOSE, previous_close),
        [Outgoing.TICK_SIZE, 6, req_id, tick_id(Tick.VOLUME), bar.volume],
    ]


def tick_req_params_message(req_id: int) -> list[Field]:
    return [Outgoing.TICK_REQ_PARAMS, req_id, MIN_TICK, BBO_EXCHANGE, SNAPSHOT_PERMISSIONS]


def market_data_type_message(req_id: int, data_type: MarketDataType) -> list[Field]:
    return [Outgoing.MARKET_DATA_TYPE, 1, req_id, int(data_type)]
