"""The runs list and the run page say partial, external, abandoned and skipped, with why."""

from __future__ import annotations

import httpx
import pytest

from services.gateway.main import create_app
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

TSLA = {"item": "TSLA", "step": "fetch_market_data", "code": 200,
        "reason": "no security definition: IBKR does not know this contract: No security definition (code 200)"}
STEP = {"attempt": 1, "started_at": "2026-03-02T14:00:01Z", "finished_at": "2026-03-02T14:00:02Z",
        "duration_seconds": 1.0, "error": None, "skipped_reason": None, "artifact_count": 0}


def run(execution_id: str, status: str, **fields) -> dict:
    return {
        "execution_id": execution_id, "workflow_id": "ibkr_trading_signal_workflow", "status": status,
        "trigger": "manual", "params": {"symbols": ["TSLA", "AAPL"]}, "requested_at": "2026-03-02T14:00:00Z",
        "started_at": "2026-03-02T14:00:01Z", "finished_at": "2026-03-02T14:00:09Z", "duration_seconds": 8.0,
        "error": None, "failed_items": [], "last_event_at": "2026-03-02T14:00:09Z", "steps_total": 2,
        "steps_finished": 2, "progress": 1.0, "artifact_count": 0, "log_count": 0, "steps": [],
    } | fields


PARTIAL = run("run-partial", "partial", failed_items=[TSLA],
              steps=[STEP | {"step_name": "fetch_market_data", "status": "succeeded"},
                     STEP | {"step_name": "publish_signals", "status": "succeeded"}])
FAILED = run("run-failed", "failed", error="step fetch_market_data failed: NoMarketDataError: none",
             steps_finished=1, progress=0.5,
             steps=[STEP | {"step_name": "fetch_market_data", "status": "failed", "error": "NoMarketDataError: none"},
                    STEP | {"step_name": "publish_signals", "status": "skipped", "started_at": None,
                            "duration_seconds": None, "skipped_reason": "step fetch_market_data failed"}])
EXTERNAL = run("my_dag__2026-11-28", "external", workflow_id="my_dag", trigger=None, params={}, requested_at=None,
               started_at=None, finished_at=None, duration_seconds=None, steps_total=1, steps_finished=0,
               progress=0.0, steps=[STEP | {"step_name": "train", "status": "external", "attempt": 0}])
ABANDONED = run("run-quiet", "abandoned", finished_at=None, duration_seconds=None, steps_finished=0, progress=0.0,
                error="no event since 2026-03-02 14:00:09 UTC: running runs that stay quiet longer than "
                      "ARTIFACTS_RUN_ABANDONED_AFTER_SECONDS are shown as abandoned")
RUNS = [PARTIAL, FAILED, EXTERNAL, ABANDONED]
EMPTY_LOGS = {"logs": [], "next_cursor": None}
NO_ARTIFACTS = {"artifacts": [], "total": 0, "limit": 500, "next_cursor": None}


def handler(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == "/api/runs":
        return httpx.Response(200, json={"runs": RUNS, "total": len(RUNS), "limit": 50, "next_cursor": None})
    if path == "/api/workflows":
        return httpx.Response(200, json={"workflows": []})
    if path == "/api/artifacts/":
        return httpx.Response(200, json=NO_ARTIFACTS)
    for r in RUNS:
        if path == f"/api/runs/{r['execution_id']}":
            return httpx.Response(200, json=r)
        if path == f"/api/runs/{r['execution_id']}/logs":
            return httpx.Response(200, json=EMPTY_LOGS)
    return httpx.Response(404, json={"error": f"nothing at {path}", "status": 404})


async def get(path: str) -> httpx.Response:
    app = create_app(GatewaySettings(artifacts_url="http://a", scheduler_url="http://s", signals_url="http://g"),
                     transport=httpx.MockTransport(handler))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return await client.get(path)


def row_of(page: str, execution_id: str) -> str:
    start = page.index(f'data-execution="{execution_id}"')
    return page[start:page.index("</tr>", start)]


async def test_the_runs_list_shows_each_state_and_the_failed_symbols_with_their_reason():
    page = (await get("/runs")).text
    partial = row_of(page, "run-partial")
    assert 'badge status-partial"' in partial
    assert "<strong>TSLA</strong> failed: no security definition" in partial
    assert 'badge status-external"' in row_of(page, "my_dag__2026-11-28")
    assert "1 step seen, outside ibflow" in row_of(page, "my_dag__2026-11-28")
    assert "live" not in row_of(page, "my_dag__2026-11-28").split("</td>")[0]
    assert 'badge status-abandoned"' in row_of(page, "run-quiet") and "no event since" in row_of(page, "run-quiet")
    for status in ("partial", "external", "abandoned"):
        assert f'<option value="{status}"' in page


async def test_the_run_page_of_a_partial_run_lists_the_failed_items_with_their_reasons():
    page = (await get("/runs/run-partial")).text
    assert 'data-status="partial"' in page and 'data-live="false"' in page
    assert 'id="failed-items"' in page and "1 item failed: the run ended partial" in page
    assert "<strong>TSLA</strong> in fetch_market_data: no security definition" in page


async def test_the_run_page_shows_skipped_steps_with_the_reason():
    page = (await get("/runs/run-failed")).text
    assert 'class="step step-skipped"' in page
    assert "not run: step fetch_market_data failed" in page
    assert "<strong>Run failed:</strong>" in page


async def test_an_external_run_is_not_live_and_has_no_watchlist():
    page = (await get("/runs/my_dag__2026-11-28")).text
    assert 'data-status="external"' in page and 'data-live="false"' in page
    assert "watchlist" not in page and "Progress" not in page
    assert 'id="external-run"' in page and "Not run by ibflow" in page
    assert 'class="step step-external"' in page


async def test_an_abandoned_run_says_since_when_it_is_quiet():
    page = (await get("/runs/run-quiet")).text
    assert 'data-live="false"' in page
    assert "<strong>Run abandoned:</strong> no event since 2026-03-02 14:00:09 UTC" in page
