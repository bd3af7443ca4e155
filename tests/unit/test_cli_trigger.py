"""`ibflow trigger`: the run's page, its progress, its outcome, its signals and exit code."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from rich.console import Console

from ibflow.trigger import (
    EXIT_FAILED,
    EXIT_NOT_TRIGGERED,
    EXIT_PARTIAL,
    EXIT_STILL_RUNNING,
    EXIT_SUCCEEDED,
    Gateway,
    trigger,
)

pytestmark = pytest.mark.unit
GW = "http://gw"
RUN_ID = "manual-0123"
STEPS = ["fetch_market_data", "compute_features", "generate_signals", "publish_signals"]
SIGNALS = {"signals": [
    {"symbol": "AAPL", "action": "SELL", "strength": 0.4812, "last_price": 430.47, "as_of": "2013-03-01",
     "reasons": ["model: 41% chance of a rise", "trend [down]: 20-day below 50-day"]},
    {"symbol": "MSFT", "action": "HOLD", "strength": 0.1, "last_price": 27.95, "as_of": "2013-03-01",
     "reasons": ["model undecided"]},
]}


def run(status: str, done: int, **extra) -> dict:
    steps = [{"step_name": name, "status": "succeeded" if i < done else ("running" if i == done else "pending"),
              "duration_seconds": 1.5 if i < done else None, "error": None} for i, name in enumerate(STEPS)]
    return {"execution_id": RUN_ID, "status": status, "steps_total": 4, "steps_finished": done,
            "duration_seconds": 12.0, "error": None, "steps": steps, **extra}


class FakeGateway:
    """Answers like the gateway: the run goes through `states`, one per poll."""

    def __init__(self, states: list[dict | None], trigger_status: int = 202, payload_inline: bool = True):
        self.states = states
        self.trigger_status = trigger_status
        self.payload_inline = payload_inline
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "POST":
            if self.trigger_status != 202:
                return httpx.Response(self.trigger_status, json={"error": "symbols: bad symbol", "status": 422})
            return httpx.Response(202, json={"execution_id": RUN_ID})
        if path == f"/api/runs/{RUN_ID}":
            state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return httpx.Response(404, json={"error": "no run"}) if state is None else httpx.Response(200, json=state)
        if path == "/api/artifacts/":
            assert request.url.params["kind"] == "signals"
            return httpx.Response(200, json={"artifacts": [{"artifact_id": "a1"}], "total": 1})
        if path == "/api/artifacts/a1":
            return httpx.Response(200, json={"payload": SIGNALS if self.payload_inline else None})
        if path == "/api/artifacts/a1/content":
            return httpx.Response(200, content=json.dumps(SIGNALS).encode())
        return httpx.Response(404)


def call(fake: FakeGateway, wait: float = 60, terminal: bool = False, token: str | None = None,
         clock=None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=200)
    errors = Console(file=err, force_terminal=False, width=200)
    with httpx.Client(transport=httpx.MockTransport(fake)) as client:
        kwargs = {"clock": clock} if clock else {}
        code = trigger(Gateway(client, GW, token), "wf", ["AAPL", "MSFT"], wait, console, errors,
                       unreachable_hint="set GATEWAY_URL", poll_seconds=0, **kwargs)
    return code, out.getvalue(), err.getvalue()


def test_without_wait_it_prints_the_id_and_the_page():
    fake = FakeGateway([None])
    code, out, _ = call(fake, wait=0, token="t")
    assert code == EXIT_SUCCEEDED
    assert out.splitlines() == [RUN_ID, f"  page: {GW}/runs/{RUN_ID}"]
    post = fake.requests[0]
    assert json.loads(post.content) == {"params": {"symbols": ["AAPL", "MSFT"]}}
    assert post.headers["authorization"] == "Bearer t"


def test_piped_progress_is_a_line_per_change_then_the_signals_table():
    fake = FakeGateway([None, run("queued", 0), run("running", 1), run("running", 1), run("running", 3),
                        run("succeeded", 4)])
    code, out, _ = call(fake)
    assert code == EXIT_SUCCEEDED
    lines = out.splitlines()
    assert lines.count("  step fetch_market_data: succeeded (1.5s)") == 1  # once, however often polled
    assert "  step publish_signals: running" in lines
    assert f"run {RUN_ID} succeeded in 12.0s (4/4 steps)" in lines
    header = next(line for line in lines if line.startswith("symbol"))
    assert header.split() == ["symbol", "action", "strength", "price", "reason"]
    aapl = next(line for line in lines if line.startswith("AAPL"))
    assert aapl.split()[:4] == ["AAPL", "SELL", "0.48", "430.47"]
    assert aapl.endswith("model: 41% chance of a rise; trend [down]: 20-day below 50-day")


def test_a_partial_run_lists_its_failed_items_and_exits_2():
    failed = [{"item": "TSLA", "step": "fetch_market_data", "reason": "No security definition", "code": 200}]
    fake = FakeGateway([run("partial", 4, failed_items=failed)])
    code, out, _ = call(fake)
    assert code == EXIT_PARTIAL
    assert "failed items (1):" in out
    assert "  TSLA (fetch_market_data): No security definition [code 200]" in out
    assert "AAPL" in out  # the signals of the symbols that worked


def test_a_failed_run_says_why_and_exits_1():
    failed_run = run("failed", 1, error="fetch_market_data: no symbol had data")
    failed_run["steps"][1].update(status="failed", error="no bars")
    failed_run["steps"][2].update(status="skipped", skipped_reason="compute_features failed")
    code, out, _ = call(FakeGateway([failed_run]))
    assert code == EXIT_FAILED
    assert "  error: fetch_market_data: no symbol had data" in out
    assert "  step compute_features failed: no bars" in out
    assert "  step generate_signals skipped: compute_features failed" in out
    assert "strength" not in out  # no signals table for a failed run


def test_a_run_still_going_when_the_wait_ends_exits_3_with_its_page():
    ticks = iter(range(100))
    code, out, _ = call(FakeGateway([run("running", 1)]), wait=3, clock=lambda: next(ticks))
    assert code == EXIT_STILL_RUNNING
    assert f"still running after 3s; follow it at {GW}/runs/{RUN_ID}" in out


def test_a_refused_trigger_exits_4_with_the_gateways_reason():
    code, out, err = call(FakeGateway([None], trigger_status=422))
    assert code == EXIT_NOT_TRIGGERED and out == ""
    assert "refused the trigger (422): symbols: bad symbol" in err
    assert "set GATEWAY_URL" not in err  # the gateway answered: its address is right


def test_an_unreachable_gateway_exits_4_with_how_to_point_at_one():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    err = io.StringIO()
    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        code = trigger(Gateway(client, GW), "wf", None, 0, Console(file=io.StringIO()),
                       Console(file=err, width=200), unreachable_hint="start the stack or set GATEWAY_URL")
    assert code == EXIT_NOT_TRIGGERED
    assert f"cannot reach the gateway at {GW}" in err.getvalue()
    assert "start the stack or set GATEWAY_URL" in err.getvalue()


def test_signals_kept_in_the_artifact_store_are_read_from_their_content():
    code, out, _ = call(FakeGateway([run("succeeded", 4)], payload_inline=False))
    assert code == EXIT_SUCCEEDED and "MSFT" in out


def test_on_a_terminal_progress_is_live_and_the_table_is_drawn():
    code, out, _ = call(FakeGateway([run("running", 2), run("succeeded", 4)]), terminal=True)
    assert code == EXIT_SUCCEEDED
    assert "4/4" in out and "signals" in out
    assert "SELL" in out and "430.47" in out
