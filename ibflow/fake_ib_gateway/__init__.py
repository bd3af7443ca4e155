"""A fake IB Gateway: the TWS API socket protocol over replayed bokeh-sampledata daily bars.

    async with FakeIBGateway(port=0, clock=ManualClock()) as gateway:
        await IB().connectAsync("127.0.0.1", gateway.port, clientId=1)
        gateway.faults.silence = True                 # any `Faults` field, at any time
        await gateway.flap_connectivity(data_lost=True, outage=0.5)
"""

from .clock import ManualClock
from .faults import ConnectivityFlap, FaultName, Faults
from .protocol import MAX_SERVER_VERSION, MIN_SERVER_VERSION
from .server import DEFAULT_ACCOUNT, FakeIBGateway, Subscription

__all__ = [
    "DEFAULT_ACCOUNT",
    "MAX_SERVER_VERSION",
    "MIN_SERVER_VERSION",
    "ConnectivityFlap",
    "FakeIBGateway",
    "FaultName",
    "Faults",
    "ManualClock",
    "Subscription",
]
