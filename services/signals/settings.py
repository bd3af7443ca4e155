"""Settings of the signals service, built at start-up from the environment / `.env`."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from services.signals.market_data.factory import ProviderName
from services.signals.market_data.ibkr.settings import IbkrSettings
from shared.artifact_store import ArtifactStoreSettings
from shared.settings import HttpSettings, KafkaSettings

DEFAULT_WATCHLIST = "AAPL,MSFT,IBM,GOOG"
_SYMBOL = re.compile(r"[A-Z][A-Z0-9.]{0,11}")


class SignalsSettings(KafkaSettings, HttpSettings, ArtifactStoreSettings, IbkrSettings):
    signals_port: int = 8003
    signals_consumer_group_id: str = "ibflow-signals"
    # `sample_file` replays the bokeh-sampledata file without a socket (tests, demos).
    market_data_provider: ProviderName = "ibkr"
    watchlist: str = DEFAULT_WATCHLIST
    # Calendar days of daily bars each run fetches; the walk-forward needs a few hundred bars.
    history_days: int = Field(default=3 * 365, ge=30)
    step_timeout_seconds: float = Field(default=120.0, gt=0)
    # JSON artifacts up to this size travel inline in the event; larger ones go to the store.
    artifact_inline_max_bytes: int = Field(default=64 * 1024, ge=1024, le=256 * 1024)
    # Where the previous run's signals are read for the report's "changes" section.
    artifacts_url: str = "http://127.0.0.1:8001"
    artifacts_timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("watchlist")
    @classmethod
    def _symbols_listed(cls, value: str) -> str:
        symbols = [s.strip().upper() for s in value.split(",") if s.strip()]
        if not symbols:
            raise ValueError("WATCHLIST needs at least one symbol, e.g. AAPL,MSFT")
        bad = [s for s in symbols if not _SYMBOL.fullmatch(s)]
        if bad:
            raise ValueError(f"WATCHLIST has symbols that are not tickers: {', '.join(bad)}")
        return value

    @property
    def watchlist_symbols(self) -> tuple[str, ...]:
        symbols = (s.strip().upper() for s in self.watchlist.split(","))
        return tuple(dict.fromkeys(s for s in symbols if s))
