"""TWS API message ids, the server-version range the fake speaks, and IBKR's error codes.

Layouts are the ones `ib_async` 2.1 writes (`client.py`) and reads (`decoder.py`).
"""

from __future__ import annotations

from enum import IntEnum

# ib_async 2.1 offers exactly this range (`Client.MinClientVersion/MaxClientVersion`);
# the fake encodes every version-dependent layout in it.
MIN_SERVER_VERSION = 157
MAX_SERVER_VERSION = 178

# Layout changes inside the supported range.
VERSION_SIZE_RULES = 164  # contract details drop the version field and mdSizeMultiplier
VERSION_SUGGESTED_SIZE_ONLY = 163  # the one version with suggestedSizeIncrement alone
VERSION_ADVANCED_REJECT = 166  # error messages carry advancedOrderRejectJson


class Incoming(IntEnum):
    """Client → server message ids."""

    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DETAILS = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    REQ_HISTORICAL_DATA = 20
    CANCEL_HISTORICAL_DATA = 25
    REQ_CURRENT_TIME = 49
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_POSITIONS_MULTI = 74
    CANCEL_POSITIONS_MULTI = 75
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_COMPLETED_ORDERS = 99


class Outgoing(IntEnum):
    """Server → client message ids."""

    TICK_PRICE = 1
    TICK_SIZE = 2
    ERR_MSG = 4
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    MANAGED_ACCTS = 15
    HISTORICAL_DATA = 17
    CURRENT_TIME = 49
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    POSITION_END = 62
    ACCOUNT_SUMMARY_END = 64
    POSITION_MULTI_END = 72
    ACCOUNT_UPDATE_MULTI_END = 74
    TICK_REQ_PARAMS = 81
    COMPLETED_ORDERS_END = 102


class ErrorCode(IntEnum):
    """The IBKR message codes the fake sends, with the texts IBKR uses."""

    HISTORICAL_DATA_SERVICE = 162
    NO_SECURITY_DEFINITION = 200
    REQUEST_PARSE_ERROR = 320
    REQUEST_VALIDATION = 321
    CLIENT_ID_IN_USE = 326
    NOT_SUBSCRIBED = 354
    CONNECTIVITY_LOST = 1100
    CONNECTIVITY_RESTORED_DATA_LOST = 1101
    CONNECTIVITY_RESTORED_DATA_KEPT = 1102
    MARKET_DATA_FARM_OK = 2104
    HMDS_FARM_OK = 2106
    SEC_DEF_FARM_OK = 2158
    DELAYED_DATA_DISPLAYED = 10167


HMDS_PREFIX = "Historical Market Data Service error message:"
PACING_VIOLATION_TEXT = HMDS_PREFIX + "Historical data request pacing violation"

ERROR_TEXT: dict[ErrorCode, str] = {
    ErrorCode.NO_SECURITY_DEFINITION: "No security definition has been found for the request",
    ErrorCode.CLIENT_ID_IN_USE: (
        "Unable to connect as the client id is already in use. Retry with a unique client id."
    ),
    ErrorCode.NOT_SUBSCRIBED: (
        "Requested market data is not subscribed. Check API status by selecting the Account menu "
        "then under Management choose Market Data Subscription Manager and/or enable delayed data."
    ),
    ErrorCode.CONNECTIVITY_LOST: "Connectivity between IB and Trader Workstation has been lost.",
    ErrorCode.CONNECTIVITY_RESTORED_DATA_LOST: (
        "Connectivity between IB and Trader Workstation has been restored - data lost."
    ),
    ErrorCode.CONNECTIVITY_RESTORED_DATA_KEPT: (
        "Connectivity between IB and Trader Workstation has been restored - data maintained. "
        "All data farms are connected: usfarm; ushmds; secdefnj."
    ),
    ErrorCode.MARKET_DATA_FARM_OK: "Market data farm connection is OK:usfarm",
    ErrorCode.HMDS_FARM_OK: "HMDS data farm connection is OK:ushmds",
    ErrorCode.SEC_DEF_FARM_OK: "Sec-def data farm connection is OK:secdefnj",
    ErrorCode.DELAYED_DATA_DISPLAYED: (
        "Requested market data is not subscribed. Displaying delayed market data."
    ),
}

NO_REQ_ID = -1
