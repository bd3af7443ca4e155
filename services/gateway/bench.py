"""Benchmark: how long the first screen of a run's page takes (issue 5, item 3).

Starts a gateway on a free loopback port in front of an artifacts service that
already holds the run, then times the page a person opens: the server-rendered HTML
of `/runs/{execution_id}` (status, steps, artifacts and the first page of log lines),
and, when headless Chromium is there, the browser from navigation until the first
log line is on screen. It prints the figures and returns them; it asserts nothing
about speed.

    python -m services.gateway.bench --artifacts-url http://127.0.0.1:8001 --execution-id RUN

`make bench` can call `time_run_page(artifacts_url, execution_id)` right after the
artifacts benchmark has stored its 50,000-record run and while it serves it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from services.gateway.main import create_app
from services.gateway.settings import GatewaySettings
from shared.http import serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@dataclass
class RunPageTimings:
    execution_id: str
    log_lines_on_first_screen: int
    html_ms: list[float] = field(default_factory=list)
    browser_ms: list[float] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"run page of {self.execution_id}: {self.log_lines_on_first_screen} log lines on the first screen"]
        for label, values in (("server HTML", self.html_ms), ("browser, first log line shown", self.browser_ms)):
            if values:
                lines.append(f"  {label:<32} median {statistics.median(values):7.0f} ms   "
                             f"min {min(values):7.0f} ms   max {max(values):7.0f} ms   ({len(values)} loads)")
        if not self.browser_ms:
            lines.append(f"  browser: not measured ({CHROMIUM} not found)")
        return "\n".join(lines)


async def time_run_page(artifacts_url: str, execution_id: str, *, rounds: int = 5,
                        browser: bool = True) -> RunPageTimings:
    settings = GatewaySettings(artifacts_url=artifacts_url)
    async with serving(create_app(settings)) as gateway_url:
        url = f"{gateway_url}/runs/{execution_id}"
        timings = await _time_html(url, execution_id, rounds)
        if browser and CHROMIUM.exists():
            timings.browser_ms = await _time_browser(url, rounds)
    print(timings.summary())
    return timings


async def _time_html(url: str, execution_id: str, rounds: int) -> RunPageTimings:
    async with httpx.AsyncClient(timeout=60) as client:
        timings = RunPageTimings(execution_id, 0)
        for _ in range(rounds):
            started = time.perf_counter()
            response = await client.get(url)
            timings.html_ms.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
        timings.log_lines_on_first_screen = response.text.count('class="log-line ')
        return timings


async def _time_browser(url: str, rounds: int) -> list[float]:
    from playwright.async_api import async_playwright

    measured = []
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for _ in range(rounds):
                page = await chromium.new_page()
                started = time.perf_counter()
                await page.goto(url, wait_until="commit")
                await page.locator("#log-list .log-line").first.wait_for(state="visible", timeout=60_000)
                measured.append((time.perf_counter() - started) * 1000)
                await page.close()
        finally:
            await chromium.close()
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-url", required=True)
    parser.add_argument("--execution-id", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    # The page's health dot probes the broker; a benchmark without one need not say so each time.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    timings = asyncio.run(time_run_page(args.artifacts_url, args.execution_id, rounds=args.rounds,
                                        browser=not args.no_browser))
    print(asdict(timings))


if __name__ == "__main__":
    main()
