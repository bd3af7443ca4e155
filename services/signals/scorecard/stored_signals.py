"""Every signal a workflow has published, read from the artifacts service's HTTP API.

Services do not import each other: the `signals` artifacts of the workflow's runs, as
the public API lists them, are what the scorecard scores.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import httpx

from services.signals.scorecard.scoring import StoredSignal

PAGE = 500
# Artifacts read at once: enough to keep the artifacts service busy, not to swamp it.
CONCURRENT_READS = 8


class StoredSignalsUnavailable(Exception):
    """The artifacts service could not tell; the message says why."""


class ArtifactsApiStoredSignals:
    def __init__(self, base_url: str, *, timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._transport = transport

    async def __call__(self, *, workflow_id: str) -> tuple[list[StoredSignal], int]:
        """The workflow's signals, and how many signals artifacts they came from."""
        try:
            async with httpx.AsyncClient(
                base_url=self._base_url, timeout=self._timeout, transport=self._transport
            ) as client:
                listed = await _signals_artifacts(client, workflow_id)
                gate = asyncio.Semaphore(CONCURRENT_READS)
                payloads = await asyncio.gather(*(_payload(client, gate, a) for a in listed))
        except httpx.HTTPStatusError as exc:
            raise StoredSignalsUnavailable(
                f"{exc.request.method} {exc.request.url.path} answered {exc.response.status_code}"
            ) from None
        except httpx.HTTPError as exc:
            raise StoredSignalsUnavailable(
                f"artifacts service at {self._base_url} unreachable: {type(exc).__name__}"
            ) from None
        signals = [
            signal
            for artifact, payload in zip(listed, payloads, strict=True)
            for signal in signals_of(artifact, payload)
        ]
        return signals, len(listed)


async def _signals_artifacts(client: httpx.AsyncClient, workflow_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"workflow_id": workflow_id, "kind": "signals", "limit": PAGE, **({"cursor": cursor} if cursor else {})}
        page = await _get_json(client, "/api/artifacts/", params)
        found += page["artifacts"]
        cursor = page.get("next_cursor")
        if not cursor:
            return found


async def _payload(client: httpx.AsyncClient, gate: asyncio.Semaphore, artifact: dict[str, Any]) -> Any:
    async with gate:
        detail = await _get_json(client, f"/api/artifacts/{artifact['artifact_id']}")
        if detail.get("payload") is not None:
            return detail["payload"]
        return await _get_json(client, f"/api/artifacts/{artifact['artifact_id']}/content")


def signals_of(artifact: dict[str, Any], payload: Any) -> list[StoredSignal]:
    """The well-formed signals of one artifact; anything else in it is skipped, not fatal:
    an artifact from outside ibflow may name itself `signals` too."""
    rows = payload.get("signals") if isinstance(payload, dict) else None
    found = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        try:
            as_of = datetime.date.fromisoformat(str(row["as_of"])[:10])
            symbol, action = str(row["symbol"]), str(row["action"])
        except (KeyError, ValueError):
            continue
        if action not in ("BUY", "SELL", "HOLD"):
            continue
        found.append(StoredSignal(
            execution_id=str(artifact["execution_id"]), symbol=symbol, as_of=as_of, action=action,
            strength=_number(row.get("strength")), price=_number(row.get("last_price", row.get("price"))),
            published_at=str(artifact.get("created_at", "")),
        ))
    return found


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


async def _get_json(client: httpx.AsyncClient, path: str, params: dict[str, Any] | None = None) -> Any:
    response = await client.get(path, params=params)
    response.raise_for_status()
    return response.json()
