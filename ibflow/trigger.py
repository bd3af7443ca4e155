"""`ibflow trigger`: start a run through the gateway, follow its steps, show its signals.

On a terminal the progress is one live line (rich); piped, it is one plain line per
change, so logs and CI output stay readable. Exit codes are part of the CLI contract
(README): a script can tell a partial run from a success.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ibflow.terminal_table import print_table

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 2
EXIT_STILL_RUNNING = 3
EXIT_NOT_TRIGGERED = 4
ACTIVE = frozenset({"queued", "running"})
OUTCOME_EXIT = {"succeeded": EXIT_SUCCEEDED, "partial": EXIT_PARTIAL}
STATUS_STYLE = {"succeeded": "green", "partial": "yellow", "failed": "red", "skipped": "dim"}
ACTION_STYLE = {"BUY": "green", "SELL": "red", "HOLD": "yellow"}


class GatewayError(Exception):
    """The gateway refused or answered with an error; the message says what."""


class GatewayUnreachable(GatewayError):
    """Nothing answered at the gateway's address."""


@dataclass
class Gateway:
    """The few calls the command makes, each turning transport errors into GatewayError."""

    client: httpx.Client
    url: str
    token: str | None = None

    def request(self, method: str, path: str, *, timeout: float = 10, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token and method != "GET" else {}
        try:
            return self.client.request(method, f"{self.url}{path}", headers=headers, timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise GatewayUnreachable(f"cannot reach the gateway at {self.url} ({type(exc).__name__}: {exc})") from None

    def start_run(self, workflow: str, symbols: list[str] | None) -> str:
        body = {"params": {"symbols": symbols}} if symbols else {}
        response = self.request("POST", f"/api/workflows/{workflow}/runs", json=body)
        if response.status_code != 202:
            raise GatewayError(f"the gateway refused the trigger ({response.status_code}): {_error_text(response)}")
        return response.json()["execution_id"]

    def run(self, execution_id: str) -> dict | None:
        """The run as the API shows it; None until its first event is stored."""
        response = self.request("GET", f"/api/runs/{execution_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise GatewayError(f"reading run {execution_id} failed ({response.status_code}): {_error_text(response)}")
        return response.json()

    def signals(self, execution_id: str) -> list[dict] | None:
        """The rows of the run's `signals` artifact; None when it has none."""
        listing = self.request("GET", "/api/artifacts/",
                               params={"execution_id": execution_id, "kind": "signals", "limit": 1})
        found = listing.json().get("artifacts", []) if listing.status_code == 200 else []
        if not found:
            return None
        artifact_id = found[0]["artifact_id"]
        detail = self.request("GET", f"/api/artifacts/{artifact_id}")
        payload = detail.json().get("payload") if detail.status_code == 200 else None
        if payload is None:  # kept in the artifact store, not inline
            content = self.request("GET", f"/api/artifacts/{artifact_id}/content")
            payload = content.json() if content.status_code == 200 else None
        rows = payload.get("signals") if isinstance(payload, dict) else None
        return rows if isinstance(rows, list) else None


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)


def trigger(gateway: Gateway, workflow: str, symbols: list[str] | None, wait: float, console: Console,
            errors: Console | None = None, unreachable_hint: str = "", poll_seconds: float = 0.5,
            clock: Callable[[], float] = time.monotonic) -> int:
    """`unreachable_hint` says how to point the command at a gateway when none answers."""
    errors = errors or Console(stderr=True)
    try:
        execution_id = gateway.start_run(workflow, symbols)
    except GatewayError as exc:
        errors.print(f"ibflow trigger: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        if isinstance(exc, GatewayUnreachable) and unreachable_hint:
            errors.print(unreachable_hint, markup=False, highlight=False, soft_wrap=True)
        return EXIT_NOT_TRIGGERED
    page = f"{gateway.url}/runs/{execution_id}"
    console.print(execution_id, markup=False, highlight=False)
    console.print(f"  page: {page}", markup=False, highlight=False)
    if not wait:
        return EXIT_SUCCEEDED
    try:
        run = follow(gateway, execution_id, wait, console, poll_seconds, clock)
        if run is None or run["status"] in ACTIVE:
            status = run["status"] if run else "not started"
            console.print(f"run {execution_id} is still {status} after {wait:g}s; follow it at {page}",
                          markup=False, highlight=False)
            return EXIT_STILL_RUNNING
        show_outcome(run, console)
        if run["status"] in OUTCOME_EXIT:
            show_signals(gateway.signals(execution_id), console)
    except GatewayError as exc:
        errors.print(f"ibflow trigger: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        return EXIT_FAILED
    return OUTCOME_EXIT.get(run["status"], EXIT_FAILED)


def follow(gateway: Gateway, execution_id: str, wait: float, console: Console,
           poll_seconds: float, clock: Callable[[], float]) -> dict | None:
    """Poll the run until it ends or `wait` runs out; progress as it goes."""
    deadline = clock() + wait
    report = LiveProgress(console) if console.is_terminal else PlainProgress(console)
    run = None
    with report:
        while True:
            run = gateway.run(execution_id) or run
            report.update(run)
            if (run and run["status"] not in ACTIVE) or clock() >= deadline:
                return run
            time.sleep(poll_seconds)


def _current_step(run: dict) -> str:
    steps = run.get("steps") or []
    running = [s["step_name"] for s in steps if s["status"] == "running"]
    return running[0] if running else ""


class LiveProgress:
    """One line that redraws: spinner, status, current step, steps done of total, time."""

    def __init__(self, console: Console):
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self._task = self._progress.add_task("queued", total=None)

    def __enter__(self) -> LiveProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, run: dict | None) -> None:
        if run is None:
            return
        step = _current_step(run)
        self._progress.update(
            self._task,
            description=f"{run['status']:<9} {step}",
            total=run.get("steps_total") or None,
            completed=run.get("steps_finished", 0),
        )


class PlainProgress:
    """A line whenever the run's status or a step's status changes."""

    def __init__(self, console: Console):
        self._console = console
        self._seen: dict[str, str] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, run: dict | None) -> None:
        if run is None:
            return
        # Its end is told by the outcome line that follows.
        if run["status"] in ACTIVE and self._seen.get("") != run["status"]:
            self._seen[""] = run["status"]
            self._say(f"run {run['status']} ({run.get('steps_finished', 0)}/{run.get('steps_total') or '?'} steps)")
        for step in run.get("steps") or []:
            name, status = step["step_name"], step["status"]
            if status == "pending" or self._seen.get(name) == status:
                continue
            self._seen[name] = status
            line = f"  step {name}: {status}"
            if step.get("duration_seconds") is not None and status != "running":
                line += f" ({step['duration_seconds']:.1f}s)"
            if why := step.get("error") or step.get("skipped_reason"):
                line += f": {why}"
            self._say(line)

    def _say(self, line: str) -> None:
        self._console.print(line, markup=False, highlight=False, soft_wrap=True)


def show_outcome(run: dict, console: Console) -> None:
    status = run["status"]
    took = f" in {run['duration_seconds']:.1f}s" if run.get("duration_seconds") is not None else ""
    console.print(f"run {run['execution_id']} {status}{took} "
                  f"({run.get('steps_finished', 0)}/{run.get('steps_total') or '?'} steps)",
                  style=STATUS_STYLE.get(status), markup=False, highlight=False, soft_wrap=True)
    if run.get("error"):
        console.print(f"  error: {run['error']}", markup=False, highlight=False, soft_wrap=True)
    for step in run.get("steps") or []:
        why = step.get("error") or step.get("skipped_reason")
        if step["status"] in ("failed", "skipped") and why:
            console.print(f"  step {step['step_name']} {step['status']}: {why}",
                          markup=False, highlight=False, soft_wrap=True)
    items = run.get("failed_items") or []
    if items:
        console.print(f"failed items ({len(items)}):", style="yellow", markup=False, highlight=False)
        for item in items:
            console.print(f"  {describe_failed_item(item)}", markup=False, highlight=False, soft_wrap=True)


def describe_failed_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = f" ({item['step']})" if item.get("step") else ""
    code = f" [code {item['code']}]" if item.get("code") is not None else ""
    return f"{item.get('item', '?')}{where}: {item.get('reason', 'no reason given')}{code}"


SIGNAL_COLUMNS = ("symbol", "action", "strength", "price", "reason")


def signal_cells(row: dict) -> tuple[str, ...]:
    strength, price = row.get("strength"), row.get("last_price", row.get("price"))
    reasons = row.get("reasons") or []
    return (
        str(row.get("symbol", "?")),
        str(row.get("action", "?")),
        f"{strength:.2f}" if isinstance(strength, int | float) else "",
        f"{price:g}" if isinstance(price, int | float) else "",
        "; ".join(str(r) for r in reasons) if isinstance(reasons, list) else str(reasons),
    )


def show_signals(rows: list[dict] | None, console: Console) -> None:
    if rows is None:
        console.print("no signals artifact in this run", markup=False, highlight=False)
        return
    print_table(console, SIGNAL_COLUMNS, [signal_cells(row) for row in rows if isinstance(row, dict)],
                title="signals", right=frozenset({"strength", "price"}),
                style=lambda column, cell: ACTION_STYLE.get(cell, "") if column == "action" else "")
