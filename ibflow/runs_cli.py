"""`ibflow runs`, `ibflow run`, `ibflow logs`, `ibflow artifacts`: the stored runs, their
steps, log lines and artifacts, read from the gateway's API for a person at a terminal.

Tables are rich tables on a terminal and aligned plain columns when piped
(`ibflow/terminal_table.py`); every cell is text from the network, shown escaped
(`ibflow.log_lines.safe`), never as markup.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.text import Text

from ibflow import sse
from ibflow.log_lines import log_line, safe
from ibflow.terminal_table import print_table
from ibflow.trigger import STATUS_STYLE, Gateway, GatewayError, GatewayUnreachable, describe_failed_item

RUN_STATUS_STYLE = STATUS_STYLE | {"running": "cyan", "queued": "blue", "abandoned": "magenta", "external": "dim"}
STEP_STATUS_STYLE = STATUS_STYLE | {"running": "cyan", "pending": "dim", "external": "dim"}
LOG_PAGE = 1000
ARTIFACT_PAGE = 500
# How long a dropped live stream is tried again before the command gives up.
RECONNECT_SECONDS = 30.0


class NotFound(GatewayError):
    """The API answered 404; the message is its own."""


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return safe(response.text[:300])
    return safe(body.get("error", body)) if isinstance(body, dict) else safe(body)


def get_json(gateway: Gateway, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    params = {k: v for k, v in (params or {}).items() if v is not None}
    response = gateway.request("GET", path, params=params)
    if response.status_code == 404:
        raise NotFound(_error_text(response))
    if response.status_code != 200:
        raise GatewayError(f"GET {path} answered {response.status_code}: {_error_text(response)}")
    try:
        return response.json()
    except ValueError:
        raise GatewayError(f"GET {path} answered something that is not JSON") from None


# --- formatting -----------------------------------------------------------------------


def when(value: Any) -> str:
    """`2026-03-02 14:30:05` (UTC)."""
    if not isinstance(value, str):
        return ""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return safe(value)
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def size(value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


def number(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else ""


RUN_COLUMNS = ("execution_id", "workflow", "status", "trigger", "started (UTC)", "duration", "steps", "artifacts",
               "logs")


def run_cells(run: dict[str, Any]) -> tuple[str, ...]:
    total = run.get("steps_total") or "?"
    return (
        safe(run.get("execution_id", "")),
        safe(run.get("workflow_id", "")),
        safe(run.get("status", "")),
        safe(run.get("trigger") or ""),
        when(run.get("started_at") or run.get("requested_at")),
        duration(run.get("duration_seconds")),
        f"{number(run.get('steps_finished')) or 0}/{total}",
        number(run.get("artifact_count")),
        number(run.get("log_count")),
    )


STEP_COLUMNS = ("step", "status", "attempt", "duration", "artifacts", "error or why skipped")


def step_cells(step: dict[str, Any]) -> tuple[str, ...]:
    return (
        safe(step.get("step_name", "")),
        safe(step.get("status", "")),
        number(step.get("attempt")),
        duration(step.get("duration_seconds")),
        number(step.get("artifact_count")),
        safe(step.get("error") or step.get("skipped_reason") or ""),
    )


ARTIFACT_COLUMNS = ("artifact_id", "name", "kind", "step", "execution_id", "created (UTC)", "size")


def artifact_cells(artifact: dict[str, Any]) -> tuple[str, ...]:
    inline = artifact.get("has_inline_payload")
    return (
        safe(artifact.get("artifact_id", "")),
        safe(artifact.get("name", "")),
        safe(artifact.get("kind", "")),
        safe(artifact.get("step_name") or artifact.get("task_id") or ""),
        safe(artifact.get("execution_id", "")),
        when(artifact.get("created_at")),
        "inline" if inline else size(artifact.get("size_bytes")),
    )


def _status_style(styles: dict[str, str]):
    return lambda column, cell: styles.get(cell, "") if column == "status" else ""


# --- commands -------------------------------------------------------------------------


def list_runs(gateway: Gateway, console: Console, *, workflow: str | None, status: str | None, limit: int) -> None:
    page = get_json(gateway, "/api/runs", {"workflow_id": workflow, "status": status, "limit": limit})
    runs = page.get("runs") or []
    print_table(console, RUN_COLUMNS, [run_cells(run) for run in runs],
                right=frozenset({"duration", "steps", "artifacts", "logs"}), style=_status_style(RUN_STATUS_STYLE))
    total = page.get("total")
    more = f" of {total}{'' if page.get('total_is_exact', True) else '+'}" if isinstance(total, int) else ""
    console.print(f"{len(runs)}{more} run(s), newest first", style="dim", highlight=False, markup=False)


def show_run(gateway: Gateway, console: Console, execution_id: str) -> None:
    quoted = quote(execution_id, safe="")
    run = get_json(gateway, f"/api/runs/{quoted}")
    status = safe(run.get("status", ""))
    header = Text()
    header.append(safe(run.get("execution_id", execution_id)), style="bold")
    header.append("  ")
    header.append(status, style=RUN_STATUS_STYLE.get(status, ""))
    console.print(header, soft_wrap=True)
    symbols = (run.get("params") or {}).get("symbols") if isinstance(run.get("params"), dict) else None
    facts = [
        ("workflow", safe(run.get("workflow_id", ""))),
        ("trigger", safe(run.get("trigger") or "")),
        ("symbols", safe(",".join(map(str, symbols))) if isinstance(symbols, list) else ""),
        ("requested", when(run.get("requested_at"))),
        ("started", when(run.get("started_at"))),
        ("finished", when(run.get("finished_at"))),
        ("duration", duration(run.get("duration_seconds"))),
        ("error", safe(run.get("error") or "")),
        ("page", f"{gateway.url}/runs/{quoted}"),
    ]
    for name, value in facts:
        if value:
            console.print(f"  {name:<9} {value}", markup=False, highlight=False, soft_wrap=True)
    steps = run.get("steps") or []
    console.print()
    print_table(console, STEP_COLUMNS, [step_cells(step) for step in steps], title="steps",
                right=frozenset({"attempt", "duration", "artifacts"}), style=_status_style(STEP_STATUS_STYLE))
    items = run.get("failed_items") or []
    if items:
        console.print()
        console.print(f"failed items ({len(items)}):", style="yellow", markup=False, highlight=False)
        for item in items:
            console.print(f"  {safe(describe_failed_item(item))}", markup=False, highlight=False, soft_wrap=True)
    artifacts = list(_artifact_pages(gateway, {"execution_id": execution_id}, limit=None))
    console.print()
    print_table(console, ARTIFACT_COLUMNS[:4] + ARTIFACT_COLUMNS[5:], [
        cells[:4] + cells[5:] for cells in map(artifact_cells, artifacts)], title=f"artifacts ({len(artifacts)})",
        right=frozenset({"size"}))


def _artifact_pages(gateway: Gateway, filters: dict[str, Any], limit: int | None) -> Iterator[dict[str, Any]]:
    cursor, seen = None, 0
    while True:
        page_size = ARTIFACT_PAGE if limit is None else min(ARTIFACT_PAGE, limit - seen)
        page = get_json(gateway, "/api/artifacts/", filters | {"limit": page_size, "cursor": cursor})
        for artifact in page.get("artifacts") or []:
            yield artifact
            seen += 1
        cursor = page.get("next_cursor")
        if not cursor or (limit is not None and seen >= limit):
            return


def list_artifacts(gateway: Gateway, console: Console, *, filters: dict[str, Any], limit: int) -> None:
    artifacts = list(_artifact_pages(gateway, filters, limit))
    print_table(console, ARTIFACT_COLUMNS, [artifact_cells(a) for a in artifacts], right=frozenset({"size"}))
    console.print(f"{len(artifacts)} artifact(s), newest first", style="dim", highlight=False, markup=False)


@dataclass(frozen=True)
class Downloaded:
    path: str
    size_bytes: int
    sha256: str


def download_artifact(gateway: Gateway, artifact_id: str, output: str | None) -> Downloaded:
    """The artifact's content into `output` (`-` for stdout; default: its name in the
    working folder), written to a temporary file first and checked against its sha256."""
    quoted = quote(artifact_id, safe="")
    artifact = get_json(gateway, f"/api/artifacts/{quoted}")
    target = output or _file_name(artifact)
    expected = artifact.get("sha256")
    if target == "-":
        written, digest = _stream_content(gateway, artifact_id, sys.stdout.buffer)
    else:
        fd, partial = tempfile.mkstemp(dir=Path(target).resolve().parent, prefix=".ibflow-download-")
        try:
            with os.fdopen(fd, "wb") as handle:
                written, digest = _stream_content(gateway, artifact_id, handle)
            if expected and digest != expected:
                raise GatewayError(f"the content of {artifact_id} has sha256 {digest}, expected {expected}: not saved")
            os.chmod(partial, 0o666 & ~_umask())  # as any file the user writes, not mkstemp's 0600
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
    if expected and digest != expected:
        raise GatewayError(f"the content of {artifact_id} has sha256 {digest}, expected {expected}")
    return Downloaded(target, written, digest)


def _stream_content(gateway: Gateway, artifact_id: str, out: BinaryIO) -> tuple[int, str]:
    """Bytes written and their sha256."""
    digest, written = hashlib.sha256(), 0
    url = f"{gateway.url}/api/artifacts/{quote(artifact_id, safe='')}/content"
    try:
        with gateway.client.stream("GET", url, timeout=httpx.Timeout(10.0, read=60.0)) as response:
            if response.status_code != 200:
                response.read()
                raise GatewayError(f"the content of {artifact_id} could not be read ({response.status_code}): "
                                   f"{_error_text(response)}")
            for chunk in response.iter_bytes():
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
        out.flush()
    except httpx.HTTPError as exc:
        raise GatewayUnreachable(f"reading the content of {artifact_id} from {gateway.url} failed "
                                 f"({type(exc).__name__}: {exc})") from None
    return written, digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _file_name(artifact: dict[str, Any]) -> str:
    """Its name as a file name in the working folder (no folders, no hidden files), with
    the extension of its media type when the name has none."""
    import mimetypes

    name = _UNSAFE_NAME.sub("_", str(artifact.get("name") or "")).strip("._") or str(artifact.get("artifact_id"))
    name = name[:200]
    if not Path(name).suffix:
        media_type = str(artifact.get("media_type") or "").split(";")[0].strip()
        name += {"application/json": ".json", "text/markdown": ".md"}.get(media_type) or (
            mimetypes.guess_extension(media_type) or "")
    return name


# --- logs -----------------------------------------------------------------------------


def print_logs(gateway: Gateway, console: Console, execution_id: str, *, level: str | None,
               step: str | None) -> int:
    """Every stored record of the run, oldest first; how many."""
    path = f"/api/runs/{quote(execution_id, safe='')}/logs"
    cursor, printed = None, 0
    while True:
        page = get_json(gateway, path, {"level": level, "step": step, "limit": LOG_PAGE, "cursor": cursor})
        for record in page.get("logs") or []:
            console.print(log_line(record), soft_wrap=True)
            printed += 1
        cursor = page.get("next_cursor")
        if not cursor:
            return printed


def follow_logs(gateway: Gateway, console: Console, execution_id: str, *, level: str | None,
                step: str | None, clock=time.monotonic) -> dict[str, Any] | None:
    """Every record, then new ones as they are stored, until the run has ended (the
    stream's `end` event, whose data is returned). A dropped stream is resumed after
    the last record seen, for up to RECONNECT_SECONDS."""
    url = f"{gateway.url}/api/runs/{quote(execution_id, safe='')}/logs/stream"
    after, dropped_at, connected = 0, None, False
    while True:
        params = {k: v for k, v in {"level": level, "step": step, "after": after}.items() if v is not None}
        try:
            with gateway.client.stream("GET", url, params=params,
                                       timeout=httpx.Timeout(10.0, read=60.0)) as response:
                connected = True
                if response.status_code == 404:
                    response.read()
                    raise NotFound(_error_text(response))
                if response.status_code != 200:
                    response.read()
                    raise GatewayError(f"the live log stream answered {response.status_code}: "
                                       f"{_error_text(response)}")
                for event in sse.events(sse.lines(response.iter_text())):
                    if event.event == "end":
                        return _json_object(event.data)
                    record = _json_object(event.data)
                    if record is None:
                        continue
                    console.print(log_line(record), soft_wrap=True)
                    dropped_at = None  # it moves: a later drop starts a new wait
                    if isinstance(record.get("id"), int):
                        after = record["id"]
        except (httpx.TransportError, httpx.DecodingError) as exc:
            dropped_at = dropped_at or clock()
            if not connected or clock() - dropped_at > RECONNECT_SECONDS:
                what = "broke and did not come back" if connected else "could not be opened"
                raise GatewayUnreachable(f"the live log stream from {gateway.url} {what} "
                                         f"({type(exc).__name__}: {exc})") from None
            time.sleep(1.0)
            continue
        # The server closed the stream without its end event: resume after the last record.
        dropped_at = dropped_at or clock()
        if clock() - dropped_at > RECONNECT_SECONDS:
            raise GatewayError("the live log stream keeps closing without its end")
        time.sleep(1.0)


def _json_object(data: str) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
