"""The guard every service puts in front of its routes, on a service of its own."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from shared.http import install_error_handlers
from shared.request_guard import RequestGuard

pytestmark = pytest.mark.unit


def service() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestGuard, max_body_bytes=1024)
    install_error_handlers(app)

    @app.get("/things")
    async def things() -> list:
        return []

    @app.post("/things")
    async def add(thing: dict) -> dict:
        return thing

    @app.post("/things/pause")
    async def pause() -> dict:
        return {"paused": True}

    return app


async def send(method: str, path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service()), base_url="http://svc") as client:
        return await client.request(method, path, **kwargs)


async def test_a_405_names_every_method_of_the_path_not_only_its_first_route():
    response = await send("PUT", "/things")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert response.json() == {"error": "PUT is not allowed here; allowed: GET, HEAD, POST", "status": 405}


async def test_a_body_on_get_is_400_where_get_is_taken_and_405_where_it_is_not():
    assert (await send("GET", "/things", content=b"x" * 10)).status_code == 400
    wrong_method = await send("GET", "/things/pause", content=b"x" * 10)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"


async def test_bodies_are_bounded_and_mutations_are_json_from_no_browser():
    assert (await send("POST", "/things", json={"pad": "x" * 2000})).status_code == 413
    assert (await send("POST", "/things", data={"a": "b"})).status_code == 415
    assert (await send("POST", "/things/pause", headers={"Origin": "http://127.0.0.1:8000"})).status_code == 403
    assert (await send("POST", "/things", json={"a": "b"})).json() == {"a": "b"}
    assert (await send("POST", "/things/pause")).json() == {"paused": True}
