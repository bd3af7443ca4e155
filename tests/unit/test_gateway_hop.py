"""What the gateway does per forwarded answer: bytes pass as the service sent them,
whole for a page of JSON, streamed for anything large or of unknown length."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from services.gateway.main import create_app
from services.gateway.proxy import WHOLE_BODY_BYTES
from services.gateway.settings import GatewaySettings
from shared.missing_imports import remember_missing

pytestmark = pytest.mark.unit

ODD_JSON = '{"artifacts":  [{"name": "signals", "note": "naïve ✓"}],\n "total": 1}'.encode()


async def fetch(reply, path: str = "/api/artifacts/?limit=1") -> httpx.Response:
    settings = GatewaySettings(artifacts_url="http://artifacts.internal:8001", scheduler_url="http://sched:8002",
                               signals_url="http://signals:8003")
    app = create_app(settings, transport=httpx.MockTransport(reply))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            return await client.get(path)


async def test_a_json_page_comes_back_byte_for_byte_with_its_headers():
    response = await fetch(lambda request: httpx.Response(
        200, content=ODD_JSON, headers={"content-type": "application/json", "etag": '"v1"'}))
    assert response.content == ODD_JSON  # not parsed and dumped again
    assert response.headers["content-length"] == str(len(ODD_JSON))
    assert (response.headers["content-type"], response.headers["etag"]) == ("application/json", '"v1"')


async def test_a_body_larger_than_a_page_or_of_unknown_length_streams_through_whole():
    large = b"x" * (WHOLE_BODY_BYTES + 1)
    assert (await fetch(lambda request: httpx.Response(200, content=large))).content == large

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"first,", b"second,", b"third"):
            yield part

    response = await fetch(lambda request: httpx.Response(200, content=chunks()))
    assert response.content == b"first,second,third"


def test_a_module_looked_up_per_request_is_remembered_as_missing_only_when_it_is(monkeypatch):
    monkeypatch.delitem(sys.modules, "no_such_module_ibflow", raising=False)
    monkeypatch.delitem(sys.modules, "json", raising=False)
    remember_missing(("no_such_module_ibflow", "json"))
    assert sys.modules["no_such_module_ibflow"] is None
    with pytest.raises(ImportError):
        import no_such_module_ibflow  # noqa: F401
    import json

    assert json.dumps([1]) == "[1]"
    monkeypatch.delitem(sys.modules, "no_such_module_ibflow")
