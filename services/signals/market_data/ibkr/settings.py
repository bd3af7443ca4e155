"""The IBKR provider's settings: a piece the signals service composes into its own."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from shared.settings import IbflowSettings

MarketDataTypeSetting = Literal["auto", "live", "delayed"]
WhatToShow = Literal["TRADES", "ADJUSTED_LAST", "MIDPOINT", "BID", "ASK", "BID_ASK"]


class IbkrSettings(IbflowSettings):
    ibkr_host: str = "127.0.0.1"
    ibkr_port: int = Field(default=4002, ge=1, le=65535)
    ibkr_client_id: int = Field(default=17, ge=0)
    # More client ids tried, one after another, when IBKR says the id is in use (326):
    # a crashed predecessor's session or another replica holds it.
    ibkr_client_id_fallbacks: int = Field(default=3, ge=0, le=32)
    ibkr_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    ibkr_request_timeout_seconds: float = Field(default=20.0, gt=0)
    # auto: live data, switching to delayed (reqMarketDataType 3) on error 354.
    ibkr_market_data_type: MarketDataTypeSetting = "auto"
    ibkr_reconnect_initial_delay_seconds: float = Field(default=1.0, gt=0)
    ibkr_reconnect_max_delay_seconds: float = Field(default=60.0, gt=0)
    # Failed connection attempts in a row before giving up; 0 = keep trying.
    ibkr_max_reconnect_attempts: int = Field(default=0, ge=0)
    ibkr_heartbeat_interval_seconds: float = Field(default=30.0, gt=0)
    # Longest a historical request waits for a pacing slot before it fails instead.
    ibkr_pacing_max_wait_seconds: float = Field(default=30.0, ge=0)
    # Requests in a row without an answer before requests are paused, and for how long.
    ibkr_unanswered_limit: int = Field(default=2, ge=1)
    ibkr_unanswered_pause_seconds: float = Field(default=30.0, ge=0)
    # An outage inside IBKR's maintenance windows becomes an alert this long after the window.
    ibkr_maintenance_grace_seconds: float = Field(default=900.0, ge=0)
    ibkr_what_to_show: WhatToShow = "TRADES"
    ibkr_use_rth: bool = True
    ibkr_bar_cache_entries: int = Field(default=512, ge=0)

    @field_validator("ibkr_market_data_type", mode="before")
    @classmethod
    def _market_data_type_number(cls, value: object) -> object:
        """IBKR's own numbers are accepted too: 1 live, 3 delayed."""
        numbers = {"1": "live", "3": "delayed"}
        text = str(value).strip().lower()
        return numbers.get(text, text)

    @property
    def ibkr_client_ids(self) -> tuple[int, ...]:
        return tuple(self.ibkr_client_id + i for i in range(self.ibkr_client_id_fallbacks + 1))
