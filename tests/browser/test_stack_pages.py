"""The pages of a whole real stack (what `make run` starts), in headless Chromium.

The demo run's artifacts and logs must read as a person expects; triggering a run
from the page must show it to its end. Screenshots land in test-output/screenshots/.
"""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.fire_times import assert_fire_times_shown
from tests.browser.screens import shot, visible_text
from tests.support import wait_for_run

pytestmark = pytest.mark.browser
WORKFLOW = "ibkr_trading_signal_workflow"
UNREADABLE = ("[object Object]", '{\\"', "&quot;")


@pytest.fixture(scope="module")
def gateway(start_stack) -> str:
    return start_stack().gateway_url


@pytest.fixture(scope="module")
def demo_run(gateway) -> dict:
    response = httpx.post(f"{gateway}/api/workflows/{WORKFLOW}/runs", json={}, timeout=10)
    return wait_for_run(gateway, response.json()["execution_id"])


def assert_readable(text: str) -> None:
    for marker in UNREADABLE:
        assert marker not in text, f"{marker!r} on the page"


async def test_the_demo_runs_page_shows_steps_artifacts_and_readable_logs(gateway, demo_run, page, screenshots):
    assert demo_run["status"] == "succeeded"
    await page.goto(f"{gateway}/runs/{demo_run['execution_id']}")
    await expect(page.locator("#steps .step-succeeded")).to_have_count(4)
    await expect(page.locator("#log-list .log-line").first).to_be_visible()
    await page.locator("#log-list .log-line").first.click()
    await shot(page, screenshots, "stack-run")
    text = await visible_text(page)
    assert_readable(text)
    for step in ("fetch_market_data", "compute_features", "generate_signals", "publish_signals"):
        assert step in text


async def test_the_artifacts_page_lists_the_demo_runs_artifacts(gateway, demo_run, page, screenshots):
    await page.goto(f"{gateway}/artifacts")
    await expect(page.get_by_text(demo_run["execution_id"]).first).to_be_visible()
    await shot(page, screenshots, "stack-artifacts")
    assert_readable(await visible_text(page))


@pytest.mark.parametrize("kind", ["dataset", "features", "model", "signals", "chart", "report"])
async def test_each_demo_artifact_kind_opens_readably(gateway, demo_run, page, screenshots, kind):
    found = httpx.get(f"{gateway}/api/artifacts/",
                      params={"execution_id": demo_run["execution_id"], "kind": kind}).json()["artifacts"]
    artifact = found[0]
    await page.goto(f"{gateway}/artifacts/{artifact['artifact_id']}")
    body = page.locator("main")
    await expect(body).to_contain_text(artifact["name"])
    if kind == "chart":
        image = page.locator("main img").first
        await expect(image).to_be_visible()
        assert await image.evaluate("img => img.complete && img.naturalWidth > 0")
    await shot(page, screenshots, f"stack-artifact-{kind}")
    assert_readable(await visible_text(page))


async def test_triggering_a_run_from_the_page_shows_it_to_the_end(gateway, page, screenshots):
    await page.goto(f"{gateway}/runs")
    form = page.locator("#trigger form[data-trigger]")
    await form.locator("input[name=symbols]").fill("aapl, msft")
    await form.get_by_role("button", name="Trigger run").click()
    await page.wait_for_url(f"{gateway}/runs/**")
    status = page.locator(".run-summary .fact").first.locator(".badge")
    await expect(status).to_have_text("succeeded", timeout=120_000)
    await expect(page.locator(".run-summary")).to_contain_text("AAPL, MSFT")
    await expect(page.locator("#steps .step-succeeded")).to_have_count(4)
    await expect(page.locator("#log-list .log-line").first).to_be_visible()
    await shot(page, screenshots, "stack-run-triggered")
    await page.goto(f"{gateway}/runs")
    await expect(page.locator("#runs-table tbody tr").first).to_contain_text("succeeded")
    await shot(page, screenshots, "stack-runs")
    assert_readable(await visible_text(page))


@pytest.fixture
def schedule_without_calendar(gateway):
    """The test stack's cron fires on 1 January only, which no trading calendar has as a
    trading day, so it has no fire times to show; without the calendar it has some."""
    url = f"{gateway}/api/workflows/{WORKFLOW}/schedule"
    before = httpx.get(f"{gateway}/api/workflows/{WORKFLOW}", timeout=10).json()["schedule"]["calendar"]
    assert httpx.patch(url, json={"calendar": None}, timeout=10).status_code == 200
    yield
    assert httpx.patch(url, json={"calendar": before}, timeout=10).status_code == 200


async def test_the_schedule_page_shows_next_fire_times(gateway, schedule_without_calendar, page, screenshots):
    workflows = httpx.get(f"{gateway}/api/workflows", timeout=10).json()["workflows"]
    [workflow] = [wf for wf in workflows if wf["workflow_id"] == WORKFLOW]
    await page.goto(f"{gateway}/workflows")
    card = page.locator(f"section.workflow[data-workflow={WORKFLOW}]")
    await expect(card).to_contain_text(WORKFLOW)
    await expect(card.locator("code.cron")).to_have_text("0 9 1 1 *")
    await assert_fire_times_shown(card, workflow)
    await shot(page, screenshots, "stack-workflows")
