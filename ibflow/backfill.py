"""`ibflow backfill`: run a workflow once per trading session of a date range, through the
gateway, and follow it with a progress bar until it ends; then show its scorecard.

On a terminal the progress is a live bar (rich); piped, one plain line whenever the
counts change. Exit codes follow `ibflow trigger`'s (README): 0 every run succeeded,
1 a run failed or the backfill was cancelled, 2 some runs were partial, 3 still going
when --wait ran out, 4 not started.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ibflow.terminal_table import print_table
from ibflow.trigger import (
    EXIT_FAILED,
    EXIT_NOT_TRIGGERED,
    EXIT_PARTIAL,
    EXIT_STILL_RUNNING,
    EXIT_SUCCEEDED,
    Gateway,
    GatewayError,
    GatewayUnreachable,
    _error_text,
)

ENDED = ("succeeded", "partial", "failed", "cancelled")
OUTCOME_EXIT = {"succeeded": EXIT_SUCCEEDED, "partial": EXIT_PARTIAL}
SCORED_HORIZON = "5"
PLANNING_TIMEOUT = 60.0


def _path(workflow: str, *parts: str) -> str:
    return "/api/workflows/" + "/".join(quote(p, safe="") for p in (workflow, *parts))


def start(gateway: Gateway, workflow: str, *, start_date: str, end_date: str, symbols: list[str] | None,
          max_active_runs: int) -> dict:
    body: dict[str, Any] = {"start": start_date, "end": end_date, "max_active_runs": max_active_runs}
    if symbols:
        body["params"] = {"symbols": symbols}
    # planning reads the exchange's calendar for the range: seconds on a busy machine
    response = gateway.request("POST", _path(workflow, "backfills"), json=body, timeout=PLANNING_TIMEOUT)
    if response.status_code != 202:
        raise GatewayError(f"the gateway refused the backfill ({response.status_code}): {_error_text(response)}")
    return response.json()


def read(gateway: Gateway, workflow: str, backfill_id: str, *, runs: bool = False) -> dict:
    response = gateway.request("GET", _path(workflow, "backfills", backfill_id), params={"runs": runs})
    if response.status_code != 200:
        raise GatewayError(f"reading backfill {backfill_id} failed ({response.status_code}): {_error_text(response)}")
    return response.json()


def ended(backfill: dict) -> int:
    return sum(backfill.get(name) or 0 for name in ENDED)


def counts_text(backfill: dict) -> str:
    parts = [f"{backfill.get('succeeded', 0)} succeeded"]
    parts += [f"{backfill[name]} {name}" for name in ("partial", "failed") if backfill.get(name)]
    parts += [f"{backfill.get('running', 0)} running", f"{backfill.get('queued', 0)} queued"]
    if backfill.get("cancelled"):
        parts.append(f"{backfill['cancelled']} cancelled")
    if backfill.get("already_requested"):
        parts.append(f"{backfill['already_requested']} run before")
    return ", ".join(parts)


class LiveProgress:
    def __init__(self, console: Console, planned: int):
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self._task = self._progress.add_task("queued", total=planned or None)

    def __enter__(self) -> LiveProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, backfill: dict) -> None:
        self._progress.update(self._task, description=counts_text(backfill), completed=ended(backfill),
                              total=backfill.get("planned") or None)


class PlainProgress:
    def __init__(self, console: Console, planned: int):
        self._console = console
        self._last: str | None = None

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, backfill: dict) -> None:
        line = f"{ended(backfill)}/{backfill.get('planned', '?')} ended: {counts_text(backfill)}"
        if line != self._last:
            self._last = line
            self._console.print(line, markup=False, highlight=False, soft_wrap=True)


def follow(gateway: Gateway, workflow: str, backfill_id: str, deadline: float, console: Console, planned: int,
           poll_seconds: float, clock: Callable[[], float]) -> dict:
    """Poll the backfill until it ends or the deadline passes."""
    report = (LiveProgress if console.is_terminal else PlainProgress)(console, planned)
    with report:
        while True:
            backfill = read(gateway, workflow, backfill_id)
            report.update(backfill)
            if backfill["status"] != "running" or clock() >= deadline:
                return backfill
            time.sleep(poll_seconds)


def scorecard_run(gateway: Gateway, workflow: str, backfill_id: str, deadline: float, poll_seconds: float,
                  clock: Callable[[], float]) -> dict | None:
    """The scorecard run requested once the backfill ended, when it ends before the deadline."""
    while clock() < deadline:
        execution_id = read(gateway, workflow, backfill_id).get("scorecard_execution_id")
        run = gateway.run(execution_id) if execution_id else None
        if run is not None and run["status"] not in ("queued", "running"):
            return run
        time.sleep(poll_seconds)
    return None


def show_scorecard(scorecard: dict, console: Console, page: str) -> None:
    labels = scorecard.get("labels") or {}
    rows = [
        (row["symbol"], row["action"], str(row["count"]),
         f"{row['hit_rate']:.0%}" if row.get("hit_rate") is not None else "-",
         f"{row['mean_signed_return']:+.2%}" if row.get("mean_signed_return") is not None else "-")
        for row in scorecard.get("summary") or [] if str(row.get("horizon")) == SCORED_HORIZON
    ]
    print_table(console, ("symbol", "action", "signals", "hit rate", "followed"), rows,
                title=f"scorecard, {SCORED_HORIZON} sessions after each signal",
                right=frozenset({"signals", "hit rate", "followed"}))
    for line in (labels.get("data"), labels.get("costs"),
                 f"{labels.get('not_yet_scorable', 0)} signals not yet scorable at every horizon", f"  page: {page}"):
        if line:
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def backfill(gateway: Gateway, workflow: str, *, start_date: str, end_date: str, symbols: list[str] | None,
             max_active_runs: int, wait: float, console: Console, errors: Console | None = None,
             unreachable_hint: str = "", poll_seconds: float = 1.0,
             clock: Callable[[], float] = time.monotonic) -> int:
    """`wait` 0: start it and say where to follow it; math.inf: until it ends."""
    errors = errors or Console(stderr=True)
    try:
        accepted = start(gateway, workflow, start_date=start_date, end_date=end_date, symbols=symbols,
                         max_active_runs=max_active_runs)
    except GatewayError as exc:
        errors.print(f"ibflow backfill: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        if isinstance(exc, GatewayUnreachable) and unreachable_hint:
            errors.print(unreachable_hint, markup=False, highlight=False, soft_wrap=True)
        return EXIT_NOT_TRIGGERED
    backfill_id, planned = accepted["backfill_id"], accepted["planned"]
    page = f"{gateway.url}/workflows#{quote(workflow, safe='')}"
    console.print(backfill_id, markup=False, highlight=False)
    console.print(f"  {planned} sessions from {start_date} to {end_date}, {max_active_runs} at a time",
                  markup=False, highlight=False)
    console.print(f"  page: {page}", markup=False, highlight=False)
    if not wait:
        return EXIT_SUCCEEDED
    deadline = clock() + wait if math.isfinite(wait) else math.inf
    try:
        done = follow(gateway, workflow, backfill_id, deadline, console, planned, poll_seconds, clock)
        if done["status"] == "running":
            console.print(f"backfill {backfill_id} is still running ({counts_text(done)}); follow it at {page}",
                          markup=False, highlight=False, soft_wrap=True)
            return EXIT_STILL_RUNNING
        console.print(f"backfill {backfill_id} {done['status']}: {counts_text(done)}",
                      style={"succeeded": "green", "partial": "yellow"}.get(done["status"], "red"),
                      markup=False, highlight=False, soft_wrap=True)
        for run in read(gateway, workflow, backfill_id, runs=True).get("runs") or []:
            if run["state"] in ("failed", "partial"):
                console.print(f"  {run['as_of']} {run['state']}: {gateway.url}/runs/{run['execution_id']}",
                              markup=False, highlight=False)
        scoring = scorecard_run(gateway, workflow, backfill_id, deadline, poll_seconds, clock)
        if scoring is not None and scoring["status"] in OUTCOME_EXIT:
            response = gateway.request("GET", _path(workflow, "scorecard"))
            if response.status_code == 200:
                show_scorecard(response.json(), console,
                               f"{gateway.url}/workflows/{quote(workflow, safe='')}/scorecard")
        elif scoring is not None:
            console.print(f"the scorecard run {scoring['execution_id']} {scoring['status']}: "
                          f"{scoring.get('error') or 'see its page'}", markup=False, highlight=False, soft_wrap=True)
    except GatewayError as exc:
        errors.print(f"ibflow backfill: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        return EXIT_FAILED
    return OUTCOME_EXIT.get(done["status"], EXIT_FAILED)
