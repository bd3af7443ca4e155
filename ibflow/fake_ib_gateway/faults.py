"""Misbehaviour the fake gateway can be told to produce.

`Faults` is mutable: a test changes a running gateway with `gateway.faults.silence = True`
and the next request sees it. `connectivity_flap` is the exception: the periodic flapping it
describes is scheduled when the gateway starts (tests trigger one flap with
`FakeIBGateway.flap_connectivity`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

EVERY_SYMBOL = "*"


class FaultName(StrEnum):
    """The names the CLI's `--fault` accepts."""

    PACING = "pacing"
    SILENCE = "silence"
    UNKNOWN_CONTRACT = "unknown-contract"
    FLAP = "flap"
    FLAP_DATA_LOST = "flap-data-lost"
    DROP_SOCKET = "drop-socket"
    CLIENT_ID_IN_USE = "client-id-in-use"
    NO_MARKET_DATA_PERMISSION = "no-market-data-permission"
    LOGIN_REFUSED = "login-refused"


@dataclass(frozen=True)
class ConnectivityFlap:
    """Error 1100 to every client, then after `outage` seconds 1101 (data lost) or 1102 (kept)."""

    data_lost: bool = False
    every: float = 60.0
    outage: float = 5.0


@dataclass
class Faults:
    pacing_violation: bool = False
    """Every historical request gets error 162 (pacing violation)."""
    silence: bool = False
    """Contract-details and historical requests are accepted and never answered."""
    unknown_symbols: frozenset[str] = frozenset()
    """Symbols answered with error 200 as if IBKR did not know them; `"*"` means all."""
    drop_socket_on_historical: bool = False
    """The connection is closed when a historical request arrives."""
    client_id_in_use: bool = False
    """startApi is answered with error 326 and the connection closed."""
    no_market_data_permission: bool = False
    """Live/frozen market data gets error 354; delayed data is served with warning 10167."""
    login_refused: bool = False
    """startApi is answered by closing the connection, as an IB Gateway that is not ready does."""
    connectivity_flap: ConnectivityFlap | None = None
    """Flap connectivity periodically (read when the gateway starts)."""

    def is_unknown(self, symbol: str) -> bool:
        unknown = {s.upper() for s in self.unknown_symbols}
        return EVERY_SYMBOL in unknown or symbol.upper() in unknown

    @classmethod
    def from_names(
        cls,
        names: Iterable[str],
        *,
        unknown_symbols: Iterable[str] = (),
        flap_every: float = ConnectivityFlap.every,
        flap_outage: float = ConnectivityFlap.outage,
    ) -> Faults:
        """Faults from CLI names; `unknown-contract` without symbols makes every symbol unknown."""
        chosen = {FaultName(name) for name in names}
        if {FaultName.FLAP, FaultName.FLAP_DATA_LOST} <= chosen:
            raise ValueError("choose one of 'flap' and 'flap-data-lost'")
        symbols = frozenset(s.upper() for s in unknown_symbols)
        if symbols and FaultName.UNKNOWN_CONTRACT not in chosen:
            raise ValueError("unknown symbols given without the 'unknown-contract' fault")
        unknown: frozenset[str] = frozenset()
        if FaultName.UNKNOWN_CONTRACT in chosen:
            unknown = symbols or frozenset({EVERY_SYMBOL})
        flap = None
        if chosen & {FaultName.FLAP, FaultName.FLAP_DATA_LOST}:
            flap = ConnectivityFlap(FaultName.FLAP_DATA_LOST in chosen, flap_every, flap_outage)
        return cls(
            pacing_violation=FaultName.PACING in chosen,
            silence=FaultName.SILENCE in chosen,
            unknown_symbols=unknown,
            drop_socket_on_historical=FaultName.DROP_SOCKET in chosen,
            client_id_in_use=FaultName.CLIENT_ID_IN_USE in chosen,
            no_market_data_permission=FaultName.NO_MARKET_DATA_PERMISSION in chosen,
            login_refused=FaultName.LOGIN_REFUSED in chosen,
            connectivity_flap=flap,
        )
