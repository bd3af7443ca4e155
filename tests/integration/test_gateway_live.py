"""The gateway over real sockets: /health against the real broker and services that
answer, refuse or hang; log streams relayed as they are written, not when they end."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from services.gateway.main import create_app
from services.gateway.settings import GatewaySettings
from shared.health import ComponentHealth, HealthReport
from shared.http import serving
from shared.kafka import ensure_topics
from shared.settings import KafkaSettings

pytestmark = pytest.mark.integration

RECORD = {"id": 1, "event_id": "e1", "occurred_at": "2026-03-02T14:00:01Z", "level": "INFO", "step_name": "fetch",
          "message": "first record", "logger": "signals.fetch", "fields": {"bars": {"n": 3}}}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Artifacts:
    """An artifacts service whose health and log stream the test controls."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.database = ComponentHealth(status="unhealthy", error="database unreachable: connection refused",
                                        detail={"host": "pg.internal", "port": 5432, "database": "ibflow",
                                                "user": "ibflow", "url": "postgresql+asyncpg://ibflow:***@pg.internal:5432/ibflow",
                                                "revision": None, "head": "0001"})
        self.app = FastAPI()
        self.app.get("/health")(self.health)
        self.app.get("/api/runs/{execution_id}/logs/stream")(self.stream)

    async def health(self) -> JSONResponse:
        report = HealthReport.of("artifacts", {"database": self.database})
        return JSONResponse(report.model_dump(mode="json"), status_code=503)

    async def stream(self, execution_id: str) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            yield f"id: 1\ndata: {json.dumps(RECORD)}\n\n"
            # Nothing more until the test has seen the first record through the gateway.
            await self.release.wait()
            yield 'event: end\ndata: {"status": "succeeded"}\n\n'

        return StreamingResponse(events(), media_type="text/event-stream")


async def hang_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


@pytest.fixture(scope="module")
async def stack(kafka_env) -> AsyncIterator[dict]:
    kafka = {key.lower(): value for key, value in kafka_env.items()}
    await ensure_topics(KafkaSettings(**kafka))
    artifacts = Artifacts()
    hanging = await asyncio.start_server(hang_forever, "127.0.0.1", 0)
    hanging_port = hanging.sockets[0].getsockname()[1]
    async with serving(artifacts.app) as artifacts_url:
        settings = GatewaySettings(
            **kafka, artifacts_url=artifacts_url, scheduler_url=f"http://127.0.0.1:{closed_port()}",
            signals_url=f"http://127.0.0.1:{hanging_port}", health_timeout_seconds=1.0,
        )
        async with serving(create_app(settings)) as gateway_url:
            yield {"gateway": gateway_url, "artifacts": artifacts}
            artifacts.release.set()
    hanging.close()


async def test_health_against_the_real_broker_and_services_that_refuse_or_hang(stack):
    # The client's timeout fails the test if the hanging service held /health up.
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{stack['gateway']}/health")
    body = response.json()
    components = body["components"]
    assert response.status_code == 200
    assert components["broker"]["status"] == "ok", components["broker"]
    assert body["status"] == "unhealthy"
    database = components["database"]
    assert database["status"] == "unhealthy"
    assert (database["detail"]["host"], database["detail"]["database"]) == ("pg.internal", "ibflow")
    assert database["detail"]["url"] == "postgresql+asyncpg://ibflow:***@pg.internal:5432/ibflow"
    assert components["scheduler"]["status"] == "unhealthy"
    assert "not answering (ConnectError)" in components["scheduler"]["error"]
    assert components["signals"]["error"] == "no answer within 1s"
    assert components["ibkr"] == {"status": "degraded", "detail": {"state": "unknown"},
                                  "error": "the signals service is not answering: no answer within 1s"}


async def relay_first_then_end(url: str, artifacts: Artifacts) -> list[str]:
    """Read the stream through the gateway: the first record must arrive while the
    service still holds the stream open, so a buffering relay never gets past it."""
    received: list[str] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(10)) as client:
        async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                received.append(line)
                if "first record" in line:
                    artifacts.release.set()
                if line.startswith("event: end"):
                    break
    artifacts.release.clear()
    return received


async def test_the_api_log_stream_is_relayed_as_it_is_written(stack):
    received = await asyncio.wait_for(
        relay_first_then_end(f"{stack['gateway']}/api/runs/run-1/logs/stream", stack["artifacts"]), 20)
    assert f"data: {json.dumps(RECORD)}" in received
    assert "event: end" in received


async def test_the_pages_log_stream_relays_rendered_lines_as_they_are_written(stack):
    received = await asyncio.wait_for(
        relay_first_then_end(f"{stack['gateway']}/ui/runs/run-1/log-stream", stack["artifacts"]), 20)
    text = "\n".join(received)
    assert "event: line" in text and 'class="log-line lvl-info"' in text
    assert "event: end" in text
