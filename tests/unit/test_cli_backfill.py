"""`ibflow backfill`: starts a backfill through the gateway, follows its counts, ends with
its outcome, its failed runs and its scorecard, and an exit code a script can act on."""

from __future__ import annotations

import io
import math

import httpx
import pytest
from rich.console import Console

from ibflow.backfill import backfill
from ibflow.trigger import EXIT_FAILED, EXIT_NOT_TRIGGERED, EXIT_PARTIAL, EXIT_STILL_RUNNING, EXIT_SUCCEEDED, Gateway

pytestmark = pytest.mark.unit
GW = "http://gw"
WF = "ibkr_trading_signal_workflow"
BF = "a" * 32
SCORECARD_RUN = f"scorecard-{WF}-{BF}"


def state(status: str, queued: int, running: int, succeeded: int, partial: int = 0, failed: int = 0,
          scorecard: bool = False) -> dict:
    return {"backfill_id": BF, "status": status, "planned": 3, "queued": queued, "running": running,
            "succeeded": succeeded, "partial": partial, "failed": failed, "cancelled": 0, "already_requested": 0,
            "scorecard_execution_id": SCORECARD_RUN if scorecard else None}


class FakeGateway:
    def __init__(self, states: list[dict], accept: int = 202, scorecard_status: str = "succeeded"):
        self.states = states
        self.accept = accept
        self.scorecard_status = scorecard_status
        self.posted: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST":
            self.posted.append(request)
            if self.accept != 202:
                return httpx.Response(self.accept, json={"error": "no XNYS trading session from 2012-06-02 to "
                                                                  "2012-06-03", "status": self.accept})
            return httpx.Response(202, json={"backfill_id": BF, "planned": 3, "workflow_id": WF})
        if path == f"/api/workflows/{WF}/backfills/{BF}":
            if request.url.params.get("runs") == "true":
                runs = [{"as_of": "2012-06-04", "execution_id": f"backfill-{WF}-20120604", "state": "failed"}]
                return httpx.Response(200, json={**self.states[-1], "runs": runs})
            current = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return httpx.Response(200, json=current)
        if path == f"/api/runs/{SCORECARD_RUN}":
            return httpx.Response(200, json={"execution_id": SCORECARD_RUN, "status": self.scorecard_status,
                                             "error": "step collect_signals failed"})
        if path == f"/api/workflows/{WF}/scorecard":
            return httpx.Response(200, json={"labels": {"data": "replayed historical sample data",
                                                        "costs": "Returns ignore trading costs.", "not_yet_scorable": 2},
                                             "summary": [{"symbol": "AAPL", "action": "BUY", "horizon": 5, "count": 2,
                                                          "hit_rate": 0.5, "mean_signed_return": 0.0123},
                                                         {"symbol": "AAPL", "action": "BUY", "horizon": 1, "count": 2,
                                                          "hit_rate": 1.0, "mean_signed_return": 0.01}]})
        return httpx.Response(404, json={"error": f"nothing at {path}"})


def run_command(fake: FakeGateway, wait: float, clock=None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    ticks = iter(range(10_000))
    with httpx.Client(transport=httpx.MockTransport(fake)) as client:
        code = backfill(Gateway(client, GW, "token"), WF, start_date="2012-06-01", end_date="2012-06-05",
                        symbols=["AAPL"], max_active_runs=2, wait=wait, console=Console(file=out, width=200),
                        errors=Console(file=err, width=200), poll_seconds=0,
                        clock=clock or (lambda: float(next(ticks))))
    return code, out.getvalue(), err.getvalue()


def test_without_wait_it_starts_the_backfill_and_says_where_to_follow_it():
    fake = FakeGateway([state("running", 2, 1, 0)])
    code, out, _ = run_command(fake, wait=0)
    assert code == EXIT_SUCCEEDED
    assert out.splitlines() == [BF, "  3 sessions from 2012-06-01 to 2012-06-05, 2 at a time",
                                f"  page: {GW}/workflows#{WF}"]
    [posted] = fake.posted
    assert posted.headers["authorization"] == "Bearer token"
    assert posted.read() == (b'{"start":"2012-06-01","end":"2012-06-05","max_active_runs":2,'
                             b'"params":{"symbols":["AAPL"]}}')


def test_piped_progress_is_a_line_per_change_then_the_outcome_and_the_scorecard():
    states = [state("running", 2, 1, 0), state("running", 2, 1, 0), state("running", 1, 1, 1),
              state("succeeded", 0, 0, 3, scorecard=True)]
    code, out, _ = run_command(FakeGateway(states), wait=math.inf)
    assert code == EXIT_SUCCEEDED
    lines = out.splitlines()
    assert lines[3:6] == [
        "0/3 ended: 0 succeeded, 1 running, 2 queued",
        "1/3 ended: 1 succeeded, 1 running, 1 queued",
        "3/3 ended: 3 succeeded, 0 running, 0 queued",
    ]
    assert f"backfill {BF} succeeded: 3 succeeded, 0 running, 0 queued" in lines
    assert "scorecard, 5 sessions after each signal" in lines
    assert any(line.split() == ["AAPL", "BUY", "2", "50%", "+1.23%"] for line in lines)
    assert "replayed historical sample data" in lines and "2 signals not yet scorable at every horizon" in lines
    assert lines[-1] == f"  page: {GW}/workflows/{WF}/scorecard"


def test_a_failed_run_is_named_with_its_page_and_exits_1():
    code, out, _ = run_command(FakeGateway([state("failed", 0, 0, 2, failed=1, scorecard=True)]), wait=math.inf)
    assert code == EXIT_FAILED
    assert f"  2012-06-04 failed: {GW}/runs/backfill-{WF}-20120604" in out.splitlines()


def test_partial_runs_exit_2_and_a_failed_scorecard_run_is_said_not_shown():
    fake = FakeGateway([state("partial", 0, 0, 2, partial=1, scorecard=True)], scorecard_status="failed")
    code, out, _ = run_command(fake, wait=math.inf)
    assert code == EXIT_PARTIAL
    assert f"the scorecard run {SCORECARD_RUN} failed: step collect_signals failed" in out
    assert "scorecard, 5 sessions" not in out


def test_still_running_when_the_wait_runs_out_exits_3():
    code, out, _ = run_command(FakeGateway([state("running", 2, 1, 0)]), wait=5)
    assert code == EXIT_STILL_RUNNING
    assert f"backfill {BF} is still running (0 succeeded, 1 running, 2 queued); follow it at" in out


def test_a_refused_backfill_exits_4_with_the_gateways_reason():
    code, out, err = run_command(FakeGateway([], accept=422), wait=math.inf)
    assert code == EXIT_NOT_TRIGGERED and out == ""
    assert "the gateway refused the backfill (422): no XNYS trading session from 2012-06-02 to 2012-06-03" in err
