"""The settings of the stack `ibflow up` started, so that every other command finds it.

`ibflow up` writes them to `var/stack.json` (mode 0600: it holds the database
password) once the stack answers, and marks the file stopped when it stops. The tool
commands (`migrate`, `topics`, `trigger`, `runs`, `run`, `logs`, `artifacts` with options,
`doctor`, `deadletter`, `config`) fill every variable the environment (or `.env`) leaves
unset from a running stack's file; explicit variables always win. The services themselves read only their environment: the stack that
spawns them passes everything, and a service started by hand must not silently
attach to whatever dev stack happens to run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ibflow.services import SERVICES

REPO = Path(__file__).resolve().parent.parent
FILE_NAME = "stack.json"
# Where the CLI looks: `make run`'s file unless a stack names its own (the tests' stacks do).
STACK_FILE_ENV = "IBFLOW_STACK_FILE"
DEFAULT_STACK_FILE = REPO / "var" / FILE_NAME

# What a client of the stack needs to reach it and to talk to it the way its services do.
RECORDED = (
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_ENABLE_IDEMPOTENCE",
    "KAFKA_SESSION_TIMEOUT_MS",
    "KAFKA_HEARTBEAT_INTERVAL_MS",
    "KAFKA_FETCH_MAX_WAIT_MS",
    "KAFKA_TOPIC_PARTITIONS",
    "KAFKA_REPLICATION_FACTOR",
    "IBKR_HOST",
    "IBKR_PORT",
    "IBKR_CLIENT_ID",
    "MARKET_DATA_PROVIDER",
    "ARTIFACT_STORE_URL",
    "ARTIFACT_STORE_S3_ENDPOINT_URL",
    "HTTP_HOST",
    "IBFLOW_API_TOKEN",
    *(name for spec in SERVICES.values() for name in (spec.port_env, spec.url_env)),
)
SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET")


def stack_file(workdir: Path) -> Path:
    return workdir / FILE_NAME


def claim(env: MutableMapping[str, str], workdir: Path) -> None:
    """Point the processes a stack spawns at its own file, never at another stack's."""
    env[STACK_FILE_ENV] = str(stack_file(workdir))


def record(env: Mapping[str, str], workdir: Path) -> Path:
    """Write the running stack's settings; readable by its owner only."""
    path = stack_file(workdir)
    document = {
        "status": "running",
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(),
        "stopped_at": None,
        "settings": {name: env[name] for name in RECORDED if env.get(name)},
    }
    _write_private(path, document)
    return path


def mark_stopped(workdir: Path) -> None:
    """On a clean stop; only the process that recorded the file may mark it."""
    path = stack_file(workdir)
    document = _read(path)
    if document is None or document.get("pid") != os.getpid() or document.get("status") != "running":
        return
    document.update(status="stopped", stopped_at=datetime.now(UTC).isoformat())
    _write_private(path, document)


def _write_private(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(document, out, indent=2)
    os.chmod(partial, 0o600)  # O_CREAT's mode does not apply to a file left by a crash
    os.replace(partial, path)


def _read(path: Path) -> dict | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class StackRecord:
    """What the CLI found in the stack file, and whether its settings apply."""

    path: Path
    settings: dict[str, str]
    running: bool
    note: str  # where the settings come from, or why they do not apply


def find(environ: Mapping[str, str] = os.environ) -> StackRecord:
    path = Path(environ.get(STACK_FILE_ENV) or DEFAULT_STACK_FILE)
    document = _read(path)
    if document is None:
        return StackRecord(path, {}, False, f"no stack is recorded in {shown(path)}")
    settings = {k: str(v) for k, v in (document.get("settings") or {}).items() if k in RECORDED and v}
    if document.get("status") != "running":
        note = f"the stack recorded in {shown(path)} stopped at {document.get('stopped_at') or '?'}"
    elif not _alive(document.get("pid")):
        note = f"the stack recorded in {shown(path)} is gone (its `ibflow up`, pid {document.get('pid')}, exited)"
    else:
        return StackRecord(path, settings, True, f"the running stack ({shown(path)})")
    return StackRecord(path, settings, False, note)


@dataclass(frozen=True)
class Resolved:
    """Every variable a command may use, with where its value came from."""

    stack: StackRecord
    sources: dict[str, str]

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")

    def hint(self, name: str) -> str:
        """How to make `name` point somewhere reachable, for error messages."""
        origin = self.source(name)
        if origin == "default":
            return (f"{name} is not set and {self.stack.note}: start the stack with `make run` "
                    f"or set {name}")
        if origin == "stack":
            return f"{name} came from {self.stack.note}: is it still up? `make run` starts it, or set {name}"
        return f"{name} is set in the {origin}: check it, or unset it to use the stack `make run` starts"


def apply(environ: MutableMapping[str, str] = os.environ, dotenv_names: frozenset[str] = frozenset()) -> Resolved:
    """Fill what the environment leaves unset from a running stack's file."""
    stack = find(environ)
    sources = {}
    for name in RECORDED:
        if environ.get(name):
            sources[name] = ".env file" if name in dotenv_names else "environment"
        elif stack.running and name in stack.settings:
            environ[name] = stack.settings[name]
            sources[name] = "stack"
    return Resolved(stack, sources)


def mask(name: str, value: str) -> str:
    """A value safe to print: secrets hidden, passwords in URLs hidden."""
    if any(word in name.upper() for word in SECRET_WORDS):
        return "***" if value else value
    return mask_url(value)


def mask_url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if not parts.password:
        return value
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
