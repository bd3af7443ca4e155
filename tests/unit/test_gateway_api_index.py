"""`GET /api/` is an index of the API: collections, documentation and every public path."""

from __future__ import annotations

import httpx
import pytest

from services.gateway.api_index import COLLECTIONS
from services.gateway.main import create_app
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

ARTIFACTS_DOC = {"paths": {
    "/api/artifacts/": {"get": {"summary": "List artifacts", "responses": {}}},
    "/api/artifacts/by-execution": {"get": {"responses": {}}},
    "/api/runs": {"get": {"responses": {}}},
    "/api/runs/{execution_id}/signals-diff": {"get": {"summary": "Signals diff", "responses": {}}},
}}
SCHEDULER_DOC = {"paths": {
    "/api/workflows": {"get": {"responses": {}}},
    "/api/workflows/{workflow_id}/runs": {"post": {"summary": "Trigger a run", "responses": {}}},
}}


def gateway(scheduler_up: bool = True):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            return httpx.Response(200, json=ARTIFACTS_DOC)
        if not scheduler_up:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=SCHEDULER_DOC)

    return create_app(GatewaySettings(artifacts_url="http://a", scheduler_url="http://s", signals_url="http://g"),
                      transport=httpx.MockTransport(handler))


async def get(app, path: str) -> httpx.Response:
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return await client.get(path)


@pytest.mark.parametrize("path", ["/api/", "/api"])
async def test_the_index_answers_with_collections_docs_and_every_path(path):
    response = await get(gateway(), path)
    assert response.status_code == 200
    body = response.json()
    assert [c["href"] for c in body["collections"]] == [c.href for c in COLLECTIONS]
    assert {d["href"] for d in body["documentation"]} >= {"/docs", "/openapi.json", "/asyncapi", "/health"}
    paths = {entry["path"]: entry for entry in body["paths"]}
    assert set(paths) >= {"/api/", "/health", "/api/runs/{execution_id}/signals-diff",
                          "/api/workflows/{workflow_id}/runs"}
    assert paths["/api/workflows/{workflow_id}/runs"] == {
        "path": "/api/workflows/{workflow_id}/runs", "methods": ["POST"], "summary": "Trigger a run"}


async def test_every_collection_is_a_served_path():
    body = (await get(gateway(), "/api/")).json()
    served = {entry["path"] for entry in body["paths"]}
    assert {c["href"] for c in body["collections"]} <= served


async def test_a_service_that_does_not_answer_leaves_the_index_answering():
    response = await get(gateway(scheduler_up=False), "/api/")
    assert response.status_code == 200
    paths = {entry["path"] for entry in response.json()["paths"]}
    # the scorecard is composed by the gateway itself, from the artifacts service
    scheduler_paths = {p for p in paths if p.startswith("/api/workflows")} - {"/api/workflows/{workflow_id}/scorecard"}
    assert "/api/runs" in paths and not scheduler_paths
