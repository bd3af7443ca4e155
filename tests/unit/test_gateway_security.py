"""The gateway under requests a browser on another site, a DNS-rebinding page or a
careless client would send: all refused with a JSON 4xx before any service is called."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.gateway.main import create_app
from services.gateway.security import host_name, normalized_origin
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

SCHEDULER = "http://scheduler.internal:8002"
PAUSE = "/api/workflows/wf/pause"
SCHEDULER_DOCUMENT = {
    "openapi": "3.1.0",
    "paths": {
        "/api/workflows/{workflow_id}/pause": {"post": {"responses": {}}},
        "/api/workflows/{workflow_id}/schedule": {"patch": {"responses": {}}},
        "/api/workflows": {"get": {"responses": {}}},
    },
}


class Downstream:
    def __init__(self, status: int = 200):
        self.requests: list[httpx.Request] = []
        self.bodies: list[int] = []
        self.status = status

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/openapi.json":
            return httpx.Response(200, json=SCHEDULER_DOCUMENT if request.url.port == 8002 else {"paths": {}})
        size = 0
        async for chunk in request.stream:
            size += len(chunk)
        self.requests.append(request)
        self.bodies.append(size)
        return httpx.Response(self.status, json={"ok": True})


async def call(method: str, path: str, *, downstream: Downstream | None = None, base_url: str = "http://127.0.0.1:8000",
               **settings_and_request) -> tuple[httpx.Response, Downstream]:
    downstream = downstream or Downstream()
    settings_keys = {"ibflow_api_token", "ibflow_allowed_hosts", "ibflow_allowed_origins", "http_max_body_bytes"}
    settings = GatewaySettings(
        artifacts_url="http://artifacts.internal:8001", scheduler_url=SCHEDULER, signals_url="http://signals:8003",
        **{k: v for k, v in settings_and_request.items() if k in settings_keys},
    )
    request = {k: v for k, v in settings_and_request.items() if k not in settings_keys}
    app = create_app(settings, transport=httpx.MockTransport(downstream))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
            return await client.request(method, path, **request), downstream


def assert_refused(response: httpx.Response, status: int, downstream: Downstream, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and words in body["error"]
    assert downstream.requests == []


# --- Host -------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io", "192.168.1.20:8000", ""])
async def test_an_unknown_host_is_refused(host):
    response, downstream = await call("GET", "/api/runs", headers={"Host": host})
    assert_refused(response, 400, downstream, "IBFLOW_ALLOWED_HOSTS")
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "LOCALHOST:8000", "[::1]:8000", "ibflow.localhost",
                                  "gateway:8000"])
async def test_loopback_and_local_names_are_served(host):
    response, downstream = await call("GET", "/api/runs", headers={"Host": host})
    assert response.status_code == 200 and len(downstream.requests) == 1


@pytest.mark.parametrize(("allowed", "host"), [("ibflow.example.com", "ibflow.example.com"),
                                               ("*.example.com", "ibflow.example.com:443"), ("*", "anything.test")])
async def test_configured_hosts_are_served(allowed, host):
    response, _ = await call("GET", "/api/runs", headers={"Host": host}, ibflow_allowed_hosts=allowed)
    assert response.status_code == 200


async def test_probes_and_scrapers_may_call_health_by_address():
    response, _ = await call("GET", "/health", headers={"Host": "10.1.2.3:8000"})
    assert response.status_code != 400


def test_host_and_origin_forms_are_compared_normalized():
    assert host_name("[::1]:8000") == "::1" and host_name("Example.COM.:80") == "example.com"
    assert normalized_origin("HTTPS://Example.com:443") == "https://example.com"
    assert normalized_origin("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"


# --- cross-site mutations ---------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://127.0.0.1:9999"},
    {"Referer": "http://evil.example/page.html"},
])
async def test_cross_site_mutations_are_refused_without_a_token(headers):
    response, downstream = await call("POST", PAUSE, headers=headers)
    assert_refused(response, 403, downstream, "cross-site request refused")


async def test_same_origin_and_configured_origins_may_mutate():
    same, _ = await call("POST", PAUSE, headers={"Origin": "http://127.0.0.1:8000", "Referer": "http://127.0.0.1:8000/"})
    assert same.status_code == 200
    proxied, _ = await call("POST", PAUSE, base_url="http://ibflow.internal", ibflow_allowed_hosts="ibflow.internal",
                            ibflow_allowed_origins="https://ibflow.example.com",
                            headers={"Origin": "https://ibflow.example.com"})
    assert proxied.status_code == 200
    no_browser, _ = await call("POST", PAUSE)  # curl, the CLI: no Origin, no Referer
    assert no_browser.status_code == 200


@pytest.mark.parametrize(("content", "content_type"), [
    (b"symbols=AAPL", "application/x-www-form-urlencoded"),
    (b"", "application/x-www-form-urlencoded"),
    (b'{"x": 1}', "text/plain"),
    (b"--b\r\n\r\n--b--", "multipart/form-data; boundary=b"),
    (b'{"params": {}}', None),
])
async def test_mutations_take_only_json(content, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response, downstream = await call("POST", "/api/workflows/wf/runs", content=content, headers=headers)
    assert_refused(response, 415, downstream, "application/json")


async def test_a_json_mutation_passes():
    response, downstream = await call("PATCH", "/api/workflows/wf/schedule", json={"paused": True},
                                      headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200 and downstream.bodies == [len(b'{"paused":true}')]


# --- bodies -----------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_refused_by_its_length():
    response, downstream = await call("PATCH", "/api/workflows/wf/schedule", content=b"x" * 2048,
                                      headers={"Content-Type": "application/json"}, http_max_body_bytes=1024)
    assert_refused(response, 413, downstream, "over the limit of 1024 bytes")


async def test_a_streamed_body_over_the_limit_is_cut_off():
    async def endless() -> AsyncIterator[bytes]:
        for _ in range(10_000):
            yield b"x" * 1024

    response, downstream = await call("PATCH", "/api/workflows/wf/schedule", content=endless(),
                                      headers={"Content-Type": "application/json"}, http_max_body_bytes=64 * 1024)
    assert response.status_code == 413
    assert response.json()["error"] == "request body over the limit of 65536 bytes"


async def test_a_body_on_get_is_refused():
    response, downstream = await call("GET", "/api/runs", content=b"x" * 10)
    assert_refused(response, 400, downstream, "a GET request carries no body")


async def test_bodies_under_the_limit_are_streamed_to_the_service():
    body = b'{"params": {"symbols": ["AAPL"]}, "pad": "' + b"x" * 500_000 + b'"}'
    response, downstream = await call("POST", "/api/workflows/wf/runs", content=body,
                                      headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert downstream.bodies == [len(body)]
    assert downstream.requests[0].headers["content-length"] == str(len(body))


# --- methods, tokens --------------------------------------------------------------------


async def test_a_method_the_service_does_not_take_is_405_with_allow_before_any_token():
    response, downstream = await call("DELETE", PAUSE, ibflow_api_token="s3cret")
    assert_refused(response, 405, downstream, "DELETE is not allowed")
    assert response.headers["allow"] == "POST"


async def test_a_real_mutation_still_needs_the_token():
    response, downstream = await call("POST", PAUSE, ibflow_api_token="s3cret")
    assert_refused(response, 401, downstream, "IBFLOW_API_TOKEN")


@pytest.mark.parametrize("value", ["Bearer sécret", "Bearer \u2603", "Bearer s3cret\u00a0", "Bearer " + "é" * 5000])
async def test_a_non_ascii_token_is_a_401_not_a_crash(value):
    response, downstream = await call("POST", PAUSE, ibflow_api_token="s3cret",
                                      headers={"Authorization": value.encode("utf-8")})
    assert_refused(response, 401, downstream, "IBFLOW_API_TOKEN")


# --- response headers -------------------------------------------------------------------


async def test_pages_have_a_content_security_policy_without_inline_script_and_cannot_be_framed():
    response, _ = await call("GET", "/asyncapi")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"


async def test_the_api_cannot_be_framed_or_sniffed_either():
    response, _ = await call("GET", "/api/runs")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/api/", "GET, HEAD"),
    ("GET", PAUSE, "POST"),
    ("OPTIONS", PAUSE, "POST"),
    ("DELETE", "/api/workflows", "GET, HEAD"),
])
async def test_every_method_nobody_takes_is_405_with_allow(method, path, allow):
    response, downstream = await call(method, path, ibflow_api_token="s3cret")
    assert_refused(response, 405, downstream, "is not allowed")
    assert response.headers["allow"] == allow


async def test_a_get_with_a_body_on_a_post_only_path_is_405_first():
    response, downstream = await call("GET", PAUSE, content=b'{"x": 1}', headers={"Content-Type": "application/json"})
    assert_refused(response, 405, downstream, "GET is not allowed")
