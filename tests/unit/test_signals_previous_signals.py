"""Reading the previous successful run's signals from the artifacts HTTP API (mocked)."""

import httpx
import pytest

from services.signals.workflow.previous_signals import ArtifactsApiPreviousSignals, PreviousSignalsUnavailable
from services.signals.workflow.runner import PreviousSignals

pytestmark = pytest.mark.unit

WORKFLOW_ID = "ibkr_trading_signal_workflow"
SIGNALS = {"signals": [{"symbol": "IBM", "action": "BUY", "strength": 0.5}], "counts": {}, "as_of": "2013-03-01"}
A1 = "7d3c2a10-4b1e-4f0a-9c55-0e8f3b2d1a01"


def api(routes: dict[str, object], seen: list[httpx.Request] | None = None) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        body = routes.get(request.url.path)
        if body is None:
            return httpx.Response(404, json={"error": "not found", "status": 404})
        if isinstance(body, int):
            return httpx.Response(body, json={"error": "boom", "status": body})
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handle)


def lookup(transport) -> ArtifactsApiPreviousSignals:
    return ArtifactsApiPreviousSignals("http://artifacts.test", timeout=1, transport=transport)


async def test_the_latest_other_successful_run_and_its_inline_signals():
    seen: list[httpx.Request] = []
    routes = {
        "/api/runs": {"runs": [{"execution_id": "exec-now"}, {"execution_id": "exec-before"}], "total": 2},
        "/api/artifacts/": {"artifacts": [{"artifact_id": A1}], "total": 1},
        f"/api/artifacts/{A1}": {"artifact_id": A1, "payload": SIGNALS},
    }
    result = await lookup(api(routes, seen))(workflow_id=WORKFLOW_ID, execution_id="exec-now")
    assert result == PreviousSignals(execution_id="exec-before", payload=SIGNALS)
    runs_query = dict(seen[0].url.params)
    assert runs_query == {"workflow_id": WORKFLOW_ID, "status": "succeeded", "limit": "5"}
    assert dict(seen[1].url.params) == {"execution_id": "exec-before", "kind": "signals", "limit": "1"}


async def test_stored_signals_are_read_from_the_content_endpoint():
    routes = {
        "/api/runs": {"runs": [{"execution_id": "exec-before"}]},
        "/api/artifacts/": {"artifacts": [{"artifact_id": A1}]},
        f"/api/artifacts/{A1}": {"artifact_id": A1, "payload": None, "uri": "file:///x"},
        f"/api/artifacts/{A1}/content": SIGNALS,
    }
    result = await lookup(api(routes))(workflow_id=WORKFLOW_ID, execution_id="exec-now")
    assert result.payload == SIGNALS


@pytest.mark.parametrize(
    "routes",
    [
        {"/api/runs": {"runs": []}},
        {"/api/runs": {"runs": [{"execution_id": "exec-now"}]}},
        {"/api/runs": {"runs": [{"execution_id": "exec-before"}]}, "/api/artifacts/": {"artifacts": []}},
    ],
    ids=["no-runs", "only-this-run", "no-signals-artifact"],
)
async def test_no_previous_run_is_none(routes):
    assert await lookup(api(routes))(workflow_id=WORKFLOW_ID, execution_id="exec-now") is None


async def test_an_error_answer_is_unavailable_with_the_status():
    with pytest.raises(PreviousSignalsUnavailable, match="GET /api/runs answered 503"):
        await lookup(api({"/api/runs": 503}))(workflow_id=WORKFLOW_ID, execution_id="exec-now")


async def test_an_unexpected_answer_is_unavailable():
    with pytest.raises(PreviousSignalsUnavailable, match="unexpected answer"):
        await lookup(api({"/api/runs": {"items": []}}))(workflow_id=WORKFLOW_ID, execution_id="exec-now")


async def test_an_unreachable_service_is_unavailable():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(PreviousSignalsUnavailable, match="unreachable: ConnectError"):
        await lookup(httpx.MockTransport(refuse))(workflow_id=WORKFLOW_ID, execution_id="exec-now")
