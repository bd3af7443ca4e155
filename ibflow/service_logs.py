"""What went wrong, read from a service's log: the line a person needs, not the tail.

Service logs are JSON lines (`level`, `message`, ...); what a process prints before
its logging is set up, or as it crashes, is plain text with Python tracebacks.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

_ERROR_LEVELS = {"ERROR", "CRITICAL"}
# The summary line that ends a traceback: `package.module.SomeError: what happened`.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Refused|Failed|Interrupt)\b.*")


def read_since(path: Path, offset: int = 0) -> list[str]:
    """The lines written to `path` after `offset` bytes (one process's part of a log
    that several runs of it append to)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def _entry(line: str) -> dict | None:
    if not line.startswith("{"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def first_errors(lines: list[str], limit: int = 3) -> list[str]:
    """Why a process failed: its start-up failure line when it logged one (the cause,
    in words), else its first ERROR lines, else the summary line of its last traceback."""
    failed, errors, exceptions = [], [], []
    for line in lines:
        entry = _entry(line)
        if entry is None:
            if _EXCEPTION_LINE.match(line):
                exceptions.append(line.strip())
            continue
        if str(entry.get("level", "")).upper() not in _ERROR_LEVELS:
            continue
        message = str(entry.get("message", "")).strip()
        if entry.get("startup") == "failed":
            failed.append(message)
        errors.append(message)
    if failed:
        return failed[:limit]
    return errors[:limit] or exceptions[-1:]


def last_error(lines: list[str]) -> str | None:
    """The most recent ERROR line or traceback summary, for a process that died."""
    for line in reversed(lines):
        entry = _entry(line)
        if entry is None:
            if _EXCEPTION_LINE.match(line):
                return line.strip()
        elif str(entry.get("level", "")).upper() in _ERROR_LEVELS:
            return str(entry.get("message", "")).strip()
    return None


def describe_exit(code: int) -> str:
    """A process's return code in words (`Popen` gives a signal as its negative)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
