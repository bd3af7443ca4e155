"""`/api/*` reaches the owning service unchanged; answers come back as they are."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from services.gateway.main import create_app
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

ARTIFACTS, SCHEDULER = "http://artifacts.internal:8001", "http://scheduler.internal:8002"


class Downstream:
    """Records what reached the services and answers with `reply`."""

    def __init__(self, reply=None):
        self.requests: list[httpx.Request] = []
        self.reply = reply or (lambda request: httpx.Response(200, json={"ok": True}))

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        if request.url.path == "/openapi.json":
            # The gateway asks which methods a path takes before a mutation: none documented here.
            return httpx.Response(404, json={"error": "not here", "status": 404})
        self.requests.append(request)
        return self.reply(request)


async def call(downstream, method: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
    settings = GatewaySettings(artifacts_url=ARTIFACTS, scheduler_url=SCHEDULER, signals_url="http://signals:8003",
                               ibflow_api_token=token)
    app = create_app(settings, transport=httpx.MockTransport(downstream))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return await client.request(method, path, **kwargs)


@pytest.mark.parametrize("path, owner", [
    ("/api/artifacts/", ARTIFACTS), ("/api/artifacts/by-execution", ARTIFACTS), ("/api/runs", ARTIFACTS),
    ("/api/runs/r-1/logs", ARTIFACTS), ("/api/workflows", SCHEDULER), ("/api/workflows/wf/ledger", SCHEDULER),
])
async def test_each_path_goes_to_its_owner(path, owner):
    downstream = Downstream()
    response = await call(downstream, "GET", path)
    assert response.status_code == 200
    assert str(downstream.requests[0].url) == owner + path


async def test_method_path_query_body_and_headers_are_forwarded():
    downstream = Downstream(lambda r: httpx.Response(202, json={"execution_id": "e-1"}))
    response = await call(
        downstream, "POST", "/api/workflows/wf%2Fodd/runs?x=1&y=a%20b",
        content=b'{"params": {"symbols": ["AAPL"]}}',
        headers={"Content-Type": "application/json", "Accept": "application/json", "Authorization": "Bearer t",
                 "Last-Event-ID": "41", "Cookie": "session=secret", "X-Other": "no"},
    )
    assert response.status_code == 202
    assert response.json() == {"execution_id": "e-1"}
    sent = downstream.requests[0]
    assert sent.method == "POST"
    assert sent.url.raw_path == b"/api/workflows/wf%2Fodd/runs?x=1&y=a%20b"
    assert json.loads(sent.content) == {"params": {"symbols": ["AAPL"]}}
    assert sent.headers["authorization"] == "Bearer t"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["last-event-id"] == "41"
    assert "cookie" not in sent.headers and "x-other" not in sent.headers


async def test_error_answers_pass_through_with_their_status_and_body():
    body = {"error": "invalid cron '* *'", "status": 422}
    downstream = Downstream(lambda r: httpx.Response(422, json=body))
    response = await call(downstream, "PATCH", "/api/workflows/wf/schedule", json={"cron": "* *"})
    assert response.status_code == 422
    assert response.json() == body


async def test_content_streams_back_with_its_media_type_and_safety_headers():
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            yield bytes([i]) * 1000

    downstream = Downstream(lambda r: httpx.Response(200, headers={"content-type": "image/png",
                                                                  "content-disposition": 'inline; filename="c.png"'},
                                                     content=chunks()))
    response = await call(downstream, "GET", "/api/artifacts/6a1c8f2e-8a4e-4f39-9d3e-0d2b8f0a9c11/content")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == 'inline; filename="c.png"'
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == b"\x00" * 1000 + b"\x01" * 1000 + b"\x02" * 1000


async def test_redirects_to_the_service_address_are_kept_on_the_gateway():
    downstream = Downstream(lambda r: httpx.Response(307, headers={"location": f"{ARTIFACTS}/api/artifacts/?kind=x"}))
    response = await call(downstream, "GET", "/api/artifacts?kind=x")
    assert response.status_code == 307
    assert response.headers["location"] == "/api/artifacts/?kind=x"


@pytest.mark.parametrize("error, status, reason", [
    (httpx.ConnectError("refused"), 503, "connection refused or host unreachable"),
    (httpx.ReadTimeout("slow"), 504, "did not answer in time"),
    (httpx.RemoteProtocolError("garbage"), 502, "connection failed (RemoteProtocolError)"),
])
async def test_an_unreachable_service_is_a_json_error(error, status, reason):
    def fail(request):
        raise error

    response = await call(Downstream(fail), "GET", "/api/runs")
    assert response.status_code == status
    assert response.json() == {
        "error": "artifacts service unavailable", "status": status,
        "details": {"service": "artifacts", "url": ARTIFACTS, "reason": reason},
    }


async def test_an_unknown_api_path_is_a_json_404():
    downstream = Downstream()
    response = await call(downstream, "GET", "/api/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"].startswith("no API at /api/nothing-here")
    assert downstream.requests == []


async def test_mutations_need_the_token_when_one_is_set():
    downstream = Downstream(lambda r: httpx.Response(202, json={"execution_id": "e"}))
    refused = await call(downstream, "POST", "/api/workflows/wf/runs", token="s3cret", json={})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "IBFLOW_API_TOKEN" in refused.json()["error"]
    wrong = await call(downstream, "POST", "/api/workflows/wf/runs", token="s3cret", json={},
                       headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert downstream.requests == []
    accepted = await call(downstream, "POST", "/api/workflows/wf/runs", token="s3cret", json={},
                          headers={"Authorization": "Bearer s3cret"})
    assert accepted.status_code == 202
    assert downstream.requests[0].headers["authorization"] == "Bearer s3cret"


async def test_reads_need_no_token():
    response = await call(Downstream(), "GET", "/api/runs", token="s3cret")
    assert response.status_code == 200


async def test_without_a_token_mutations_pass():
    response = await call(Downstream(lambda r: httpx.Response(202, json={})), "POST", "/api/workflows/wf/pause")
    assert response.status_code == 202
