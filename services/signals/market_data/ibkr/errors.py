"""IBKR's message codes as named sets, with what each means for a user of ibflow.

Codes are IBKR's (TWS API "message codes"); `ib_async` hands them over unchanged in
`errorEvent(reqId, code, message, contract)` and `RequestError.code`. Connection-wide
codes (1100, 1101, 1102, farm status, 502/504) arrive with `reqId = -1`.
"""

from __future__ import annotations

from dataclasses import dataclass

PACING_OR_HMDS = 162  # "Historical Market Data Service error": pacing, no data, no permission...
NO_SECURITY_DEFINITION = 200
CLIENT_ID_IN_USE = 326
NOT_SUBSCRIBED = 354
CANNOT_CONNECT = 502
NOT_CONNECTED = 504
RESTORED_DATA_LOST = 1101
RESTORED_DATA_KEPT = 1102
DELAYED_DATA_DISPLAYED = 10167

CONNECTIVITY_LOST = frozenset({1100, 1300, 2110})
CONNECTIVITY_RESTORED = frozenset({RESTORED_DATA_LOST, RESTORED_DATA_KEPT})
FARM_BROKEN = frozenset({2103, 2105, 2157})
FARM_OK = frozenset({2104, 2106, 2158})
FARM_INACTIVE = frozenset({2107, 2108})
# Live data not permitted; the last two also mean that delayed data is off for the account.
NO_MARKET_DATA_PERMISSION = frozenset({NOT_SUBSCRIBED, 10089, 10090, 10168})
# The API session itself was refused although the socket is up (paper-trading disclaimer
# not accepted, API not enabled for this user): nothing a reconnect can fix.
SESSION_REFUSED = frozenset({10141})

MEANINGS: dict[int, str] = {
    PACING_OR_HMDS: "historical market data service error",
    NO_SECURITY_DEFINITION: "no security definition: IBKR does not know this contract",
    321: "IBKR refused the request as invalid",
    CLIENT_ID_IN_USE: "client id already in use by another API connection",
    NOT_SUBSCRIBED: "no market data subscription for live data",
    10089: "the market data requires an additional API subscription",
    10090: "part of the requested market data is not subscribed",
    10168: "no market data subscription, and delayed market data is not enabled",
    DELAYED_DATA_DISPLAYED: "no live market data subscription: delayed data is served",
    CANNOT_CONNECT: "cannot connect to TWS / IB Gateway",
    NOT_CONNECTED: "not connected to TWS / IB Gateway",
    1100: "IB Gateway lost its connection to IBKR's servers",
    1300: "the TWS socket port was reset",
    2110: "TWS lost its connection to IBKR's servers",
    RESTORED_DATA_LOST: "connection to IBKR restored; market data subscriptions were lost",
    RESTORED_DATA_KEPT: "connection to IBKR restored; market data kept",
    2103: "market data farm connection is broken",
    2105: "historical data farm connection is broken",
    2157: "security definition data farm connection is broken",
    2104: "market data farm connection is OK",
    2106: "historical data farm connection is OK",
    2158: "security definition data farm connection is OK",
    2107: "historical data farm connection is inactive (available on demand)",
    2108: "market data farm connection is inactive (available on demand)",
    10141: "the paper-trading disclaimer must be accepted before API connections",
}

_PACING_TEXT = "pacing violation"
_NO_PERMISSION_TEXT = "no market data permissions"
_NO_DATA_TEXT = "query returned no data"


def is_warning(code: int) -> bool:
    """IBKR's informational codes, the ones `ib_async` does not fail a request on."""
    return 2100 <= code < 2200 or code == DELAYED_DATA_DISPLAYED


def is_pacing_violation(code: int, message: str) -> bool:
    return code == PACING_OR_HMDS and _PACING_TEXT in message.lower()


def is_no_permission(code: int, message: str) -> bool:
    return code in NO_MARKET_DATA_PERMISSION or (code == PACING_OR_HMDS and _NO_PERMISSION_TEXT in message.lower())


def meaning(code: int | None, message: str = "") -> str:
    """What `code` means, in words; error 162's meaning depends on its text."""
    if code is None:
        return message or "no error code"
    if code == PACING_OR_HMDS:
        if is_pacing_violation(code, message):
            return "historical data pacing violation"
        if is_no_permission(code, message):
            return "no market data permission for historical data"
        if _NO_DATA_TEXT in message.lower():
            return "the historical data query returned no data"
    return MEANINGS.get(code, "IBKR error")


@dataclass(frozen=True)
class IbMessage:
    """One error/notice from IBKR, as ibflow records it (never the `ib_async` object)."""

    code: int
    message: str
    req_id: int = -1

    @property
    def meaning(self) -> str:
        return meaning(self.code, self.message)

    def describe(self) -> str:
        return f"IBKR {self.code} ({self.meaning}): {self.message}"

    def as_detail(self) -> dict[str, object]:
        return {"code": self.code, "meaning": self.meaning, "message": self.message}


def farm_name(message: str) -> str:
    """`"HMDS data farm connection is broken:ushmds"` -> `"ushmds"`."""
    return message.rsplit(":", 1)[-1].strip() if ":" in message else message.strip()
