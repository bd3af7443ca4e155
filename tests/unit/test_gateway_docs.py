"""/docs and /openapi.json document the whole API; /asyncapi the event contract."""

from __future__ import annotations

import httpx
import pytest

from services.gateway.asyncapi import event_contract
from services.gateway.downstream import Downstream
from services.gateway.main import create_app
from services.gateway.openapi import merge_openapi
from services.gateway.settings import GatewaySettings
from shared import topics

pytestmark = pytest.mark.unit

GATEWAY = {
    "openapi": "3.1.0", "info": {"title": "ibflow API", "version": "1"},
    "paths": {"/health": {"get": {"tags": ["gateway"], "responses": {"200": {"description": "ok"}}}}},
    "components": {"schemas": {"HealthReport": {"type": "object"}}},
}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def ok(schema: dict) -> dict:
    return {"200": {"description": "ok", "content": {"application/json": {"schema": schema}}}}


ARTIFACTS_DOC = {
    "paths": {
        "/api/artifacts/": {"get": {"summary": "List", "responses": ok(ref("Page"))}},
        "/api/runs": {"get": {"responses": ok(ref("Item"))}},
        "/health": {"get": {"responses": ok(ref("HealthReport"))}},
        "/api/workflows": {"get": {"responses": ok({})}},  # not the artifacts service's to document
    },
    "components": {"schemas": {
        "Page": {"type": "object", "properties": {"items": {"type": "array", "items": ref("Item")}}},
        "Item": {"type": "object", "properties": {"artifact_id": {"type": "string"}}},
        "HTTPValidationError": {"type": "object"},
    }},
}
SCHEDULER_DOC = {
    "paths": {
        "/api/workflows/{workflow_id}/runs": {"post": {"responses": ok(ref("Page"))}},
        "/api/workflows": {"get": {"tags": ["workflows"], "responses": ok(ref("Item"))}},
    },
    "components": {"schemas": {
        "Page": {"type": "object", "properties": {"items": {"type": "array", "items": ref("Item")}}},
        "Item": {"type": "object", "properties": {"workflow_id": {"type": "string"}}},
        "HTTPValidationError": {"type": "object"},
    }},
}


def owner(path: str):
    if path.startswith(("/api/artifacts", "/api/runs")):
        return Downstream("artifacts", "http://a")
    if path.startswith("/api/workflows"):
        return Downstream("scheduler", "http://s")
    return None


def test_merge_takes_each_services_own_paths_and_keeps_the_gateways():
    merged = merge_openapi(GATEWAY, {"artifacts": ARTIFACTS_DOC, "scheduler": SCHEDULER_DOC}, owner)
    assert list(merged["paths"]) == ["/api/artifacts/", "/api/runs", "/api/workflows",
                                     "/api/workflows/{workflow_id}/runs", "/health"]
    assert merged["paths"]["/health"] == GATEWAY["paths"]["/health"]
    assert merged["paths"]["/api/workflows"]["get"]["tags"] == ["workflows"]
    assert merged["paths"]["/api/runs"]["get"]["tags"] == ["artifacts"]
    assert GATEWAY["paths"].keys() == {"/health"}  # the input is not changed


def test_merge_renames_clashing_schemas_and_follows_references():
    merged = merge_openapi(GATEWAY, {"artifacts": ARTIFACTS_DOC, "scheduler": SCHEDULER_DOC}, owner)
    schemas = merged["components"]["schemas"]
    assert schemas["Item"]["properties"] == {"artifact_id": {"type": "string"}}
    assert schemas["scheduler_Item"]["properties"] == {"workflow_id": {"type": "string"}}
    # Page is identical as written but refers to a renamed schema: it is renamed too
    assert schemas["scheduler_Page"]["properties"]["items"]["items"] == ref("scheduler_Item")
    assert schemas["Page"]["properties"]["items"]["items"] == ref("Item")
    assert "scheduler_HTTPValidationError" not in schemas  # identical schemas are shared
    scheduler_runs = merged["paths"]["/api/workflows/{workflow_id}/runs"]["post"]
    assert scheduler_runs["responses"]["200"]["content"]["application/json"]["schema"] == ref("scheduler_Page")
    assert merged["paths"]["/api/workflows"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == \
        ref("scheduler_Item")


def test_mutations_are_marked_as_needing_the_bearer_token():
    merged = merge_openapi(GATEWAY, {"scheduler": SCHEDULER_DOC}, owner)
    assert merged["paths"]["/api/workflows/{workflow_id}/runs"]["post"]["security"] == [{"bearerAuth": []}]
    assert "security" not in merged["paths"]["/api/workflows"]["get"]
    assert merged["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_a_missing_service_is_named_in_the_description():
    merged = merge_openapi(GATEWAY, {"artifacts": ARTIFACTS_DOC}, owner, {"scheduler": "connection refused"})
    assert "The scheduler service did not answer" in merged["info"]["description"]
    assert not any(p.startswith("/api/workflows") for p in merged["paths"])


async def gateway_get(app, *paths: str) -> list[httpx.Response]:
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return [await client.get(path) for path in paths]


async def test_openapi_json_is_fetched_lazily_cached_and_retried_after_a_failure():
    calls = {"artifacts": 0, "scheduler": 0}
    scheduler_up = False

    def handler(request: httpx.Request) -> httpx.Response:
        service = "artifacts" if request.url.host == "a" else "scheduler"
        calls[service] += 1
        if service == "scheduler" and not scheduler_up:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=ARTIFACTS_DOC if service == "artifacts" else SCHEDULER_DOC)

    app = create_app(GatewaySettings(artifacts_url="http://a", scheduler_url="http://s", signals_url="http://g"),
                     transport=httpx.MockTransport(handler))
    async with app.router.lifespan_context(app):
        assert calls == {"artifacts": 0, "scheduler": 0}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            first = (await client.get("/openapi.json")).json()
            assert "/api/runs" in first["paths"] and "/api/workflows" not in first["paths"]
            assert "/health" in first["paths"]
            scheduler_up = True
            second = (await client.get("/openapi.json")).json()
            assert "/api/workflows/{workflow_id}/runs" in second["paths"]
            await client.get("/openapi.json")
    assert calls == {"artifacts": 1, "scheduler": 2}


async def test_docs_page_lists_every_operation():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=ARTIFACTS_DOC if request.url.host == "a" else SCHEDULER_DOC)

    app = create_app(GatewaySettings(artifacts_url="http://a", scheduler_url="http://s", signals_url="http://g"),
                     transport=httpx.MockTransport(handler))
    (page,) = await gateway_get(app, "/docs")
    assert page.status_code == 200
    for path in ("/api/artifacts/", "/api/runs", "/api/workflows/{workflow_id}/runs", "/health"):
        assert f'<code class="path">{path}</code>' in page.text
    assert 'id="schema-scheduler_Item"' in page.text
    assert "cdn" not in page.text.lower() and "unpkg" not in page.text


def test_event_contract_has_every_topic_with_its_events():
    document = event_contract("kafka.internal:9092", "1.2.3")
    assert document["asyncapi"].startswith("3.")
    assert document["info"]["version"] == "1.2.3"
    assert {c["address"] for c in document["channels"].values()} == set(topics.ALL_TOPICS)
    schemas = document["components"]["schemas"]
    for name in ("RunRequested", "RunStarted", "RunSucceeded", "RunFailed", "StepStarted", "StepSucceeded",
                 "StepFailed", "ArtifactCreated", "LogRecorded", "SignalGenerated", "DeadLetter"):
        assert name in schemas, name
    artifact = schemas["ArtifactCreated"]["properties"]
    assert {"dag_id", "task_id", "payload", "uri", "sha256", "kind", "media_type"} <= artifact.keys()
    artifacts_channel = document["channels"][topics.ARTIFACTS]
    assert "Airflow DAG" in artifacts_channel["description"]
    assert "execution_id" in artifacts_channel["description"]


async def test_asyncapi_json_and_page_are_served():
    app = create_app(GatewaySettings(kafka_bootstrap_servers="kafka.internal:9092"),
                     transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    document, page = await gateway_get(app, "/asyncapi.json", "/asyncapi")
    assert document.json()["servers"]["development"]["host"] == "kafka.internal:9092"
    for topic in topics.ALL_TOPICS:
        assert f'id="{topic}"' in page.text
    assert "StepFailed" in page.text and "task_id" in page.text
    assert "unpkg" not in page.text
