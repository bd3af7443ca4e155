"""Choose the market data provider from `MARKET_DATA_PROVIDER`."""

from __future__ import annotations

from typing import Literal, Protocol

from services.signals.market_data.ibkr import IbkrProvider, IbkrSettings
from services.signals.market_data.provider import MarketDataProvider
from services.signals.market_data.sample_file import SampleFileProvider

ProviderName = Literal["sample_file", "ibkr"]


class ProviderUnavailableError(RuntimeError):
    """The configured provider cannot be built in this build."""


class ProviderSettings(Protocol):
    market_data_provider: ProviderName


def build_provider(settings: ProviderSettings) -> MarketDataProvider:
    match settings.market_data_provider:
        case "sample_file":
            return SampleFileProvider()
        case "ibkr":
            if not isinstance(settings, IbkrSettings):
                raise ProviderUnavailableError("MARKET_DATA_PROVIDER=ibkr needs the IBKR_* settings")
            return IbkrProvider(settings)
        case other:
            raise ProviderUnavailableError(f"MARKET_DATA_PROVIDER={other!r}: expected 'sample_file' or 'ibkr'")
