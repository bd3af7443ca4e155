"""Helpers the test tiers share (fixtures live in conftest.py files)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import httpx

# Where a run stops moving: its outcomes, and `abandoned` (no event for a long time).
# Not `external`: an ibflow run can show it for a moment, before its run.requested lands.
TERMINAL = {"succeeded", "partial", "failed", "abandoned"}


def private_tmp(name: str) -> Path:
    """A folder outside pytest's temp root for servers that run as another user.

    pytest prunes and re-permissions its own temp root when another session starts,
    which would pull the data folder from under a running PostgreSQL.
    """
    return Path(tempfile.mkdtemp(prefix=f"ibflow-test-{name}-"))


def wait_for_run(gateway: str, execution_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        response = httpx.get(f"{gateway}/api/runs/{execution_id}", timeout=10)
        if response.status_code == 200:
            last = response.json()
            if last["status"] in TERMINAL:
                return last
        time.sleep(0.5)
    raise AssertionError(f"run {execution_id} did not end within {timeout}s; last seen: {last}")


def json_value(raw: bytes | None) -> dict | None:
    """A record's JSON object, or None: other tests leave malformed records on the shared broker on purpose."""
    try:
        value = json.loads(raw or b"")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
