"""Backfill and scorecard on a whole real stack (the runs' bars come through ib_async from
the fake IB gateway, which enforces IBKR's pacing itself): one succeeded run per NYSE
session as of its date, nothing run twice, and a scorecard whose returns are the sample
data's closes.

A short range keeps this fast (a run costs a few seconds, most of it the charts); the
planning of the whole summer of 2012 is in tests/unit/test_scheduler_backfill_planning.py
and its full run on a stack is measured in the README.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
import subprocess
import sys
import time
from functools import cache

import httpx
import pytest

from ibflow import stack_config
from services.signals.market_data.sample_file import sample_file_path
from tests.support import wait_for_run

pytestmark = pytest.mark.e2e
WORKFLOW = "ibkr_trading_signal_workflow"
SYMBOLS = ["AAPL", "MSFT", "IBM", "GOOG"]
START, END = "2012-06-28", "2012-07-06"
SESSIONS = ["2012-06-28", "2012-06-29", "2012-07-02", "2012-07-03", "2012-07-05", "2012-07-06"]


@cache
def sample_close(symbol: str, day: str) -> float:
    with gzip.open(sample_file_path(), "rt", newline="") as rows:
        return next(float(r["Close"]) for r in csv.DictReader(rows) if (r["Ticker"], r["Date"]) == (symbol, day))


def wait_for_backfill(gateway: str, backfill_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(f"{gateway}/api/workflows/{WORKFLOW}/backfills/{backfill_id}").json()
        if body["status"] != "running" or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack()


@pytest.fixture(scope="module")
def gateway(stack) -> str:
    return stack.gateway_url


@pytest.fixture(scope="module")
def backfilled(stack, gateway) -> tuple[subprocess.CompletedProcess, dict]:
    """`ibflow backfill ... --wait` against the stack, as a person would type it."""
    env = {k: v for k, v in os.environ.items() if k not in stack_config.RECORDED}
    env[stack_config.STACK_FILE_ENV] = str(stack_config.stack_file(stack.workdir))
    done = subprocess.run(
        [sys.executable, "-m", "ibflow.cli", "backfill", WORKFLOW, "--start", START, "--end", END,
         "--symbols", ",".join(SYMBOLS), "--max-active-runs", "3", "--wait", "900"],
        env=env, capture_output=True, text=True, timeout=1000,
    )
    backfill_id = done.stdout.splitlines()[0] if done.stdout else ""
    body = httpx.get(f"{gateway}/api/workflows/{WORKFLOW}/backfills/{backfill_id}", params={"runs": True}).json()
    return done, body


def test_the_backfill_ends_with_one_succeeded_run_per_session(backfilled):
    done, body = backfilled
    assert done.returncode == 0, done.stdout + done.stderr
    assert (body["status"], body["planned"], body["succeeded"], body["failed"]) == ("succeeded", 6, 6, 0)
    assert [run["as_of"] for run in body["runs"]] == SESSIONS  # no run on the 4th of July
    assert "scorecard, 5 sessions after each signal" in done.stdout


def test_each_run_is_as_of_its_session(gateway, backfilled):
    _, body = backfilled
    for session in body["runs"]:
        execution_id = session["execution_id"]
        assert execution_id == f"backfill-{WORKFLOW}-{session['as_of'].replace('-', '')}"
        run = httpx.get(f"{gateway}/api/runs/{execution_id}").json()
        assert (run["status"], run["trigger"], run["params"]["as_of"]) == ("succeeded", "backfill", session["as_of"])
        artifacts = httpx.get(f"{gateway}/api/artifacts/", params={"execution_id": execution_id, "limit": 100}).json()
        dataset = next(a for a in artifacts["artifacts"] if a["name"] == "market_data")
        assert (dataset["metadata"]["end"], dataset["metadata"]["as_of"]) == (session["as_of"], session["as_of"])
        signals = next(a for a in artifacts["artifacts"] if a["kind"] == "signals")
        payload = httpx.get(f"{gateway}/api/artifacts/{signals['artifact_id']}").json()["payload"]
        assert sorted(s["symbol"] for s in payload["signals"]) == sorted(SYMBOLS)
        assert {s["as_of"] for s in payload["signals"]} == {session["as_of"]}


def test_submitting_the_same_range_again_starts_no_run(gateway, backfilled):
    def backfill_runs() -> int:
        listing = httpx.get(f"{gateway}/api/runs", params={"workflow_id": WORKFLOW, "trigger": "backfill",
                                                            "limit": 100}).json()
        return len(listing["runs"])

    assert backfill_runs() == 6
    response = httpx.post(f"{gateway}/api/workflows/{WORKFLOW}/backfills",
                          json={"start": START, "end": END, "params": {"symbols": SYMBOLS}})
    assert response.status_code == 202, response.text
    assert response.json()["planned"] == 6
    again = wait_for_backfill(gateway, response.json()["backfill_id"])
    assert (again["status"], again["already_requested"], again["succeeded"]) == ("succeeded", 6, 6)
    time.sleep(3)
    assert backfill_runs() == 6


def test_the_backfill_asked_ibkr_once_per_symbol(stack, backfilled):
    """Each run sliced its bars from the symbol's history: 4 historical requests for the
    6 runs, not 24, and 4 more for the scorecard run after them (a second scorecard, of
    the second submission below, may already be served from the cache)."""
    messages = [json.loads(line).get("message", "") for line in stack.log_lines("signals") if line.startswith("{")]
    asked = [m for m in messages if re.match(r"IBKR historical daily bars for [A-Z]+: \d+ bars \d{4}-", m)]
    sliced = [m for m in messages if "from the history fetched up to 2013-03-01" in m]
    assert len(asked) == 2 * len(SYMBOLS), "\n".join(asked)
    assert len(sliced) == 6 * len(SYMBOLS) - len(SYMBOLS)


@pytest.fixture(scope="module")
def scorecard(gateway, backfilled) -> dict:
    """After a run as of 2012-06-01 (a manual one: the API takes as_of too), scored again."""
    manual = httpx.post(f"{gateway}/api/workflows/{WORKFLOW}/runs",
                        json={"params": {"symbols": ["AAPL"], "as_of": "2012-06-01"}})
    assert manual.status_code == 202, manual.text
    assert wait_for_run(gateway, manual.json()["execution_id"], timeout=180)["status"] == "succeeded"
    requested = httpx.post(f"{gateway}/api/workflows/{WORKFLOW}/scorecard/runs")
    assert requested.status_code == 202, requested.text
    assert wait_for_run(gateway, requested.json()["execution_id"], timeout=180)["status"] == "succeeded"
    response = httpx.get(f"{gateway}/api/workflows/{WORKFLOW}/scorecard")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["execution_id"] == requested.json()["execution_id"]
    return body


def test_the_5_day_return_of_aapl_as_of_2012_06_01_is_the_sample_closes_ratio(scorecard):
    [aapl] = [s for s in scorecard["signals"] if (s["symbol"], s["as_of"]) == ("AAPL", "2012-06-01")]
    expected = sample_close("AAPL", "2012-06-08") / sample_close("AAPL", "2012-06-01") - 1
    assert math.isclose(aapl["forward_returns"]["5"], expected, abs_tol=1e-9)
    assert math.isclose(aapl["price"], sample_close("AAPL", "2012-06-01"), abs_tol=1e-9)


def test_the_hit_rates_add_up_from_the_listed_signals(scorecard):
    assert len(scorecard["signals"]) == 6 * 4 + 1
    for row in scorecard["summary"]:
        listed = [s for s in scorecard["signals"] if (s["symbol"], s["action"]) == (row["symbol"], row["action"])]
        known = [s["forward_returns"][str(row["horizon"])] for s in listed]
        known = [r for r in known if r is not None]
        assert row["count"] == len(known)
        if row["action"] == "HOLD" or not known:
            assert row["hit_rate"] is None
            continue
        hits = sum((r > 0) if row["action"] == "BUY" else (r < 0) for r in known)
        assert math.isclose(row["hit_rate"], hits / len(known), abs_tol=1e-9)


def test_the_scorecard_says_what_it_used_and_what_it_ignores(scorecard):
    labels = scorecard["labels"]
    assert labels["replayed"] is True and "replayed historical sample data" in labels["data"]
    assert "IBKR TRADES daily bars" in labels["data"]
    assert "costs" in labels["costs"] and "slippage" in labels["costs"]
    assert labels["not_yet_scorable"] == 0  # the sample data goes on to 2013
    assert scorecard["horizons"] == [1, 5, 20]
