"""A backfill started from the workflows page and followed there to its end, then the
scorecard page it leads to, in headless Chromium against a whole real stack.
Screenshots land in test-output/screenshots/."""

from __future__ import annotations

import time

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.screens import shot, visible_text

pytestmark = pytest.mark.browser
WORKFLOW = "ibkr_trading_signal_workflow"
UNREADABLE = ("[object Object]", '{\\"', "&quot;", "undefined", "NaN")


@pytest.fixture(scope="module")
def gateway(start_stack) -> str:
    return start_stack().gateway_url


def wait_for_scorecard(gateway: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{gateway}/api/workflows/{WORKFLOW}/scorecard", timeout=10)
        if response.status_code == 200:
            return response.json()
        time.sleep(1)
    raise AssertionError(f"no scorecard within {timeout}s")


async def test_a_backfill_started_on_the_workflows_page_shows_its_progress_to_the_end(gateway, page, screenshots):
    await page.goto(f"{gateway}/workflows")
    card = page.locator(f"section.workflow[data-workflow={WORKFLOW}]")
    form = card.locator("form[data-backfill-form]")
    await form.locator("input[name=start]").fill("2012-07-02")
    await form.locator("input[name=end]").fill("2012-07-06")
    await form.locator("input[name=symbols]").fill("aapl msft")
    await form.locator("input[name=max_active_runs]").fill("2")
    await form.get_by_role("button", name="Start backfill").click()
    # planning reads the exchange calendar of the range: seconds on a busy machine
    await expect(form.locator(".form-status")).to_have_text("Backfill started: 4 sessions.", timeout=60_000)
    backfill = card.locator("[data-backfills] .backfill").first
    # shown at once, not at the next refresh
    await expect(backfill.locator(".progress-stacked")).to_be_visible(timeout=5_000)
    await shot(page, screenshots, "stack-workflows-backfill-started")
    await expect(backfill.locator(".badge")).to_have_text("succeeded", timeout=300_000)
    await expect(backfill.locator(".backfill-counts")).to_contain_text("4 succeeded")
    await expect(backfill.get_by_role("link", name="scorecard")).to_be_visible(timeout=30_000)
    await shot(page, screenshots, "stack-workflows-backfill")
    text = await visible_text(page)
    for marker in UNREADABLE:
        assert marker not in text


async def test_the_scorecard_page_shows_the_summary_and_a_curve_per_symbol(gateway, page, screenshots):
    scorecard = wait_for_scorecard(gateway)
    assert {s["symbol"] for s in scorecard["signals"]} == {"AAPL", "MSFT"}
    await page.goto(f"{gateway}/workflows/{WORKFLOW}/scorecard")
    await expect(page.locator("h1")).to_have_text("Did its signals work?")
    await expect(page.locator("svg.curve")).to_have_count(3)  # AAPL, MSFT and ALL
    await expect(page.locator("table.scorecard-summary tbody tr").first).to_be_visible()
    text = await visible_text(page)
    assert "replayed historical sample data" in text and "slippage" in text
    for marker in UNREADABLE:
        assert marker not in text
    await shot(page, screenshots, "stack-scorecard")
    await page.get_by_role("button", name="Score again now").click()
    await expect(page.locator(".page-head .form-status")).to_contain_text("Scoring in run scorecard-")


async def test_a_runs_signals_lead_to_the_scorecard(gateway, page):
    runs = httpx.get(f"{gateway}/api/runs", params={"workflow_id": WORKFLOW, "trigger": "backfill"}).json()["runs"]
    await page.goto(f"{gateway}/runs/{runs[0]['execution_id']}")
    await page.get_by_role("link", name="scorecard ↗").click()
    await page.wait_for_url(f"{gateway}/workflows/{WORKFLOW}/scorecard")
