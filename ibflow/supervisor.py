"""Keeps a running dev stack up, as a compose restart policy would.

A process of the stack that dies (a service, the fake IB gateway) is started again
after a back-off that doubles from 1 s to at most 30 s and starts over once the
process has stayed up for a minute; each death is reported with its exit code and
the last error line of its log, and a restarted service again once it is ready.

Infrastructure the stack started: PostgreSQL is restarted on its own data (services
reconnect by themselves); the broker is restarted and, because its memory storage
lost every topic and offset while the services keep cached metadata, the topics are
created again and every service that holds broker clients is restarted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ibflow import service_logs
from ibflow.services import SERVICES

if TYPE_CHECKING:
    from ibflow.stack import Stack

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0
# A process that stayed up this long starts its back-off over.
STABLE_AFTER_SECONDS = 60.0
CHECK_EVERY_SECONDS = 0.5
# The services that hold broker clients (the gateway only probes the broker).
BROKER_CLIENTS = ("artifacts", "scheduler", "signals")


@dataclass
class _Restarts:
    """The back-off of one restartable part of the stack."""

    count: int = 0
    delay: float = FIRST_DELAY_SECONDS
    due: float | None = None  # monotonic time of a restart that is waiting for its delay
    up_since: float = 0.0
    # what the next "up again" message says the process came back from, if anything
    awaiting_ready: str | None = None

    def schedule(self, now: float) -> float:
        delay = self.delay
        self.count += 1
        self.due = now + delay
        self.delay = min(delay * 2, MAX_DELAY_SECONDS)
        return delay

    def started(self, now: float, *, awaiting_ready: str | None) -> None:
        self.due, self.up_since, self.awaiting_ready = None, now, awaiting_ready

    def note_uptime(self, now: float) -> None:
        if now - self.up_since >= STABLE_AFTER_SECONDS:
            self.delay = FIRST_DELAY_SECONDS


class Supervisor:
    """Watches a started `Stack` from a thread of its own until `stop`.

    The processes it restarts are its thread's children (their parent-death signal is
    tied to that thread), so the thread lives until the stack stops them all.
    """

    def __init__(self, stack: Stack, say: Callable[[str], None]) -> None:
        self._stack = stack
        self._say = say
        self._restarts: dict[str, _Restarts] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ibflow-supervisor", daemon=True)

    def start(self) -> None:
        now = time.monotonic()
        for name in self._stack.process_names():
            self._restarts[name] = _Restarts(up_since=now)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stopping.wait(CHECK_EVERY_SECONDS):
            try:
                self.check()
            except Exception as exc:  # the supervisor must outlive what it watches
                self._say(f"supervising failed for a moment: {type(exc).__name__}: {exc}")

    def check(self) -> None:
        now = time.monotonic()
        if self._infrastructure(now):
            return
        for name in self._stack.process_names():
            if self._stopping.is_set():
                return
            self._process(name, self._restarts.setdefault(name, _Restarts(up_since=now)), now)

    def _process(self, name: str, restarts: _Restarts, now: float) -> None:
        stack = self._stack
        code = stack.exit_code(name)
        if code is not None and restarts.due is None:
            last = service_logs.last_error(stack.log_lines(name)) or "none in its log"
            delay = restarts.schedule(now)
            self._say(f"the {name} service died ({service_logs.describe_exit(code)}); last error: {last}; "
                      f"restarting it in {delay:g}s (restart {restarts.count})")
        elif restarts.due is not None and now >= restarts.due:
            stack.respawn(name)
            restarts.started(time.monotonic(),
                             awaiting_ready=f"after restart {restarts.count}" if name in SERVICES else None)
        elif code is None and restarts.awaiting_ready:
            if stack.readiness(name)[0]:
                self._say(f"the {name} service is up again {restarts.awaiting_ready}")
                restarts.awaiting_ready = None
        elif code is None:
            restarts.note_uptime(now)

    def _infrastructure(self, now: float) -> bool:
        """Restart dead infrastructure; True when the services were restarted with it."""
        stack = self._stack
        if stack.postgres_died():
            restarts = self._restarts.setdefault("postgres", _Restarts())
            if restarts.due is None:
                delay = restarts.schedule(now)
                self._say(f"PostgreSQL (embedded) stopped; restarting it in {delay:g}s (restart {restarts.count})")
            elif now >= restarts.due:
                stack.restart_postgres()
                restarts.started(time.monotonic(), awaiting_ready=None)
                self._say("PostgreSQL (embedded) is up again; the services reconnect by themselves")
        if stack.broker_died():
            restarts = self._restarts.setdefault("broker", _Restarts())
            if restarts.due is None:
                delay = restarts.schedule(now)
                self._say(f"the broker (tansu, memory storage) stopped; restarting it in {delay:g}s "
                          f"(restart {restarts.count}): its topics and offsets are lost, so the topics are "
                          "created again and the services restarted")
                return False
            if now < restarts.due:
                return False
            stack.restart_broker()
            restarts.started(time.monotonic(), awaiting_ready=None)
            self._say(f"the broker is up again with its topics; restarting {', '.join(BROKER_CLIENTS)}")
            for name in stack.process_names():
                if name in BROKER_CLIENTS:
                    stack.respawn(name)
                    self._restarts[name] = _Restarts(up_since=time.monotonic(),
                                                     awaiting_ready="after the broker's restart")
            return True
        for part in ("postgres", "broker"):
            if part in self._restarts:
                self._restarts[part].note_uptime(now)
        return False
