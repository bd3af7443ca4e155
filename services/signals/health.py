"""`/health` of the signals service: market data (as `ibkr`), broker, artifact store.

Market data trouble is `degraded`, never `unhealthy`: stored artifacts stay readable
and runs fail visibly per symbol instead.
"""

from __future__ import annotations

import asyncio

from services.signals.market_data.provider import MarketDataProvider
from shared.artifact_store import ArtifactStore
from shared.health import ComponentHealth, HealthReport
from shared.kafka import probe_broker
from shared.settings import KafkaSettings
from shared.settings_report import settings_component

SERVICE = "signals"
_OK_STATES = {"connected", "disabled"}


def market_data_health(provider: MarketDataProvider) -> ComponentHealth:
    health = provider.health()
    detail = {"provider": provider.name, **health.detail, "state": health.state}
    # a data farm down leaves the socket connected but the data stale: say so
    if health.state in _OK_STATES and not health.detail.get("degraded"):
        return ComponentHealth(status="ok", detail=detail)
    error = detail.get("error") or f"market data provider {provider.name} is {health.state}"
    return ComponentHealth(status="degraded", detail=detail, error=str(error))


async def store_health(store: ArtifactStore) -> ComponentHealth:
    detail = await store.health()
    if detail.get("writable") is False:
        return ComponentHealth(status="degraded", detail=detail, error="artifact store folder is not writable")
    return ComponentHealth(status="ok", detail=detail)


async def health_report(settings: KafkaSettings, provider: MarketDataProvider, store: ArtifactStore) -> HealthReport:
    broker, artifact_store = await asyncio.gather(probe_broker(settings), store_health(store))
    return HealthReport.of(SERVICE, {"ibkr": market_data_health(provider), "broker": broker,
                                     "artifact_store": artifact_store, "settings": settings_component(settings)})
