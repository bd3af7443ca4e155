"""Market data from Interactive Brokers (TWS / IB Gateway, or ibflow's fake gateway) via `ib_async`.

`client` and `parsing` are the only modules that touch `ib_async`; the rest works on
ibflow's own types: `errors` (IBKR codes and meanings), `pacing` (historical-data
pacing), `maintenance` (IBKR's scheduled outages), `supervisor` (the connection state
machine), `provider` (`IbkrProvider`, the `MarketDataProvider`), `settings`.
"""

from services.signals.market_data.ibkr.provider import IbkrProvider
from services.signals.market_data.ibkr.settings import IbkrSettings

__all__ = ["IbkrProvider", "IbkrSettings"]
