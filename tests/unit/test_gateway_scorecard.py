"""The scorecard in the gateway (API route and page) and the backfills fragment, against
services answered in memory."""

from __future__ import annotations

import datetime

import httpx
import pytest

from services.gateway.main import create_app
from services.gateway.settings import GatewaySettings
from services.signals.scorecard.scoring import Closes, StoredSignal, score
from shared.scorecard import HORIZONS, Labels, Scorecard

pytestmark = pytest.mark.unit

ARTIFACT_ID = "7b2d9f3e-8a4e-4f39-9d3e-0d2b8f0a9c22"
LISTING = {"artifacts": [{"artifact_id": ARTIFACT_ID, "execution_id": "scorecard-wf-1"}], "total": 1,
           "limit": 1, "next_cursor": None}


def a_scorecard() -> dict:
    days = tuple(datetime.date(2012, 6, 1) + datetime.timedelta(days=n) for n in range(40))
    closes = {"AAPL": Closes(days, tuple(100 + (n % 7) for n in range(40))),
              "<B&C>": Closes(days, tuple(50 - (n % 5) for n in range(40)))}
    signals = [StoredSignal(f"backfill-wf-{d:%Y%m%d}", symbol, d, ("BUY", "SELL", "HOLD")[n % 3], 0.5, 1.0, str(d))
               for n, d in enumerate(days[:25]) for symbol in closes]
    scores = score(signals, closes, HORIZONS)
    return Scorecard(
        workflow_id="wf", horizons=list(HORIZONS), signals=scores.signals, summary=scores.summary,
        curves=scores.curves, duplicates_ignored=0, first_as_of="2012-06-01", last_as_of="2012-06-25",
        prices_until="2012-07-10", labels=Labels(
            data="replayed historical sample data (file), not today's market", replayed=True, delayed=False,
            costs="Returns ignore trading costs, slippage, dividends and taxes.", not_yet_scorable=scores.not_yet_scorable),
    ).model_dump(mode="json") | {"unpriced_symbols": {"TSLA": "no security definition (code 200)"}}


def services(routes: dict[str, object], seen: list | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append((request.url.path, dict(request.url.params)))
        answer = routes.get(request.url.path)
        if answer is None:
            return httpx.Response(404, json={"error": f"nothing at {request.url.path}", "status": 404})
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    return handler


async def get(handler, path: str) -> httpx.Response:
    app = create_app(GatewaySettings(artifacts_url="http://a", scheduler_url="http://s", signals_url="http://g"),
                     transport=httpx.MockTransport(handler))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return await client.get(path)


def stored(payload) -> dict:
    return {"/api/artifacts/": LISTING, f"/api/artifacts/{ARTIFACT_ID}": {
        "artifact_id": ARTIFACT_ID, "execution_id": "scorecard-wf-1", "created_at": "2026-12-01T10:00:00Z",
        "payload": payload}}


async def test_the_api_answers_the_latest_scorecard_of_the_workflows_scorecard_workflow():
    seen: list = []
    payload = a_scorecard()
    response = await get(services(stored(payload), seen), "/api/workflows/wf/scorecard")
    assert response.status_code == 200
    body = response.json()
    assert body["signals"] == payload["signals"] and body["summary"] == payload["summary"]
    assert (body["artifact_id"], body["execution_id"]) == (ARTIFACT_ID, "scorecard-wf-1")
    assert seen[0] == ("/api/artifacts/", {"workflow_id": "wf.scorecard", "kind": "scorecard", "limit": "1"})


async def test_a_scorecard_kept_in_the_store_is_read_from_its_content():
    routes = stored(None) | {f"/api/artifacts/{ARTIFACT_ID}/content": a_scorecard()}
    body = (await get(services(routes), "/api/workflows/wf/scorecard")).json()
    assert body["horizons"] == [1, 5, 20] and body["labels"]["replayed"] is True


async def test_no_scorecard_yet_is_404_saying_how_to_get_one():
    empty = {"/api/artifacts/": {"artifacts": [], "total": 0, "limit": 1, "next_cursor": None}}
    response = await get(services(empty), "/api/workflows/wf/scorecard")
    assert response.status_code == 404
    assert "POST /api/workflows/wf/backfills" in response.json()["error"]
    page = await get(services(empty), "/workflows/wf/scorecard")
    assert page.status_code == 404 and "No scorecard yet" in page.text


async def test_the_page_shows_the_labels_the_summary_and_a_chart_per_symbol():
    page = await get(services(stored(a_scorecard())), "/workflows/wf/scorecard")
    assert page.status_code == 200
    text = page.text
    assert "replayed historical sample data" in text and "Returns ignore trading costs" in text
    assert "TSLA" in text and "no security definition (code 200)" in text
    assert text.count('<svg class="curve"') == 3  # AAPL, <B&C> and ALL
    assert "&lt;B&amp;C&gt;" in text and "<B&C>" not in text
    assert 'href="/runs/backfill-wf-20120625"' in text
    assert "Did its signals work?" in text and 'data-scorecard-refresh' in text


async def test_a_scorecard_the_page_cannot_read_is_shown_as_a_problem_not_an_error():
    broken = a_scorecard() | {"summary": [{"symbol": "AAPL", "horizon": "soon"}]}
    page = await get(services(stored(broken)), "/workflows/wf/scorecard")
    assert page.status_code == 200
    assert "This scorecard cannot be shown" in page.text and f'href="/artifacts/{ARTIFACT_ID}"' in page.text


async def test_the_artifacts_service_away_is_a_problem_banner():
    page = await get(services({"/api/artifacts/": httpx.ConnectError("refused")}), "/workflows/wf/scorecard")
    assert page.status_code == 503 and "The artifacts service is not answering" in page.text


BACKFILL = {
    "backfill_id": "b" * 32, "workflow_id": "wf", "start": "2012-06-01", "end": "2012-08-31", "calendar": "XNYS",
    "params": {"symbols": ["AAPL", "MSFT"]}, "max_active_runs": 4, "status": "running", "planned": 65, "queued": 50,
    "running": 4, "succeeded": 9, "partial": 1, "failed": 1, "cancelled": 0, "already_requested": 3,
    "scorecard_execution_id": None, "created_at": "2026-12-01T10:00:00Z", "updated_at": "2026-12-01T10:00:00Z",
    "cancelled_at": None,
}


async def test_the_backfills_fragment_shows_progress_counts_and_a_cancel_button():
    seen: list = []
    fragment = await get(services({"/api/workflows/wf/backfills": {"backfills": [BACKFILL]}}, seen),
                         "/ui/workflows/wf/backfills")
    assert fragment.status_code == 200
    text = fragment.text
    assert 'data-active="true"' in text and f'data-backfill-cancel="{"b" * 32}"' in text
    assert "9 succeeded" in text and "1 partial" in text and "1 failed" in text and "50 queued" in text
    assert "3 run before" in text and "AAPL, MSFT" in text
    assert 'class="segment segment-succeeded" style="width: 13.85%"' in text
    assert seen == [("/api/workflows/wf/backfills", {"limit": "5"})]


async def test_a_finished_backfill_links_its_scorecard_and_offers_no_cancel():
    done = BACKFILL | {"status": "succeeded", "queued": 0, "running": 0, "succeeded": 65, "partial": 0, "failed": 0,
                       "scorecard_execution_id": "scorecard-wf-" + "b" * 32}
    text = (await get(services({"/api/workflows/wf/backfills": {"backfills": [done]}}), "/ui/workflows/wf/backfills")).text
    assert 'data-active="false"' in text and "data-backfill-cancel" not in text
    assert 'href="/workflows/wf/scorecard"' in text


async def test_the_workflows_page_links_the_scorecard_and_offers_a_backfill():
    workflows = {"workflows": [{"workflow_id": "wf", "schedule": {"cron": "0 9 * * 1-5", "paused": False},
                                "next_fire_times": []}]}
    page = await get(services({"/api/workflows": workflows, "/api/workflows/wf/ledger": {"entries": []}}),
                     "/workflows")
    assert 'href="/workflows/wf/scorecard"' in page.text
    assert 'data-backfill-form data-workflow="wf"' in page.text
    assert 'data-backfills="/ui/workflows/wf/backfills"' in page.text


def test_a_curve_labels_its_top_bottom_and_zero_without_one_over_another():
    from services.gateway.scorecard_chart import curve_svg

    svg = str(curve_svg("X", [("2012-06-01", 0.0, 0.0), ("2012-06-04", 0.004, -0.2), ("2012-06-05", 0.003, -0.1)]))
    labels = [part.split(">")[1] for part in svg.split("<text")[1:]]
    assert labels[:2] == ["+0.0%</text", "-20.0%</text"]  # +0.4% sits on +0.0%: left out
    assert str(curve_svg("X", [("2012-06-01", 0.0, 0.0)])).startswith('<p class="muted small">')
