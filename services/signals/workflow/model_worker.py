"""The child process that fits the runs' models, so that scikit-learn never stays in the service.

scikit-learn, scipy and joblib are about 90 MB once imported, and a long-lived process
that fits models keeps growing. The service's own process keeps only pandas (tables,
CSV, charts); `generate_signals` hands its fitting to this worker, a spawned process
that is started when a run begins (its imports overlap the run's first steps), reused
by the runs that follow, replaced after MAX_RUNS fits (no growth over many runs), and
stopped after IDLE_SECONDS without work: an idle service holds no model libraries,
and gives the heap its runs freed back to the system.

Only picklable functions of module level run here, and what they return must not hold
an estimator: unpickling one would import scikit-learn into the service.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger(__name__)

IDLE_SECONDS = 30.0
MAX_RUNS = 50
T = TypeVar("T")


def warm_up() -> None:
    """Imports what a fit needs, ahead of the first one."""
    import joblib  # noqa: F401
    import sklearn.dummy  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    import sklearn.preprocessing  # noqa: F401
    import threadpoolctl  # noqa: F401

    import services.signals.workflow.trading_signal  # noqa: F401


class ModelWorker:
    def __init__(self, *, idle_seconds: float = IDLE_SECONDS, max_runs: int = MAX_RUNS) -> None:
        self.idle_seconds = idle_seconds
        self.max_runs = max_runs
        self._pool: ProcessPoolExecutor | None = None
        self._busy = 0
        self._idle_timer: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        return self._pool is not None

    def _current_pool(self) -> ProcessPoolExecutor:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._pool is None:
            # spawned, not forked: the service has threads (the broker client's, to_thread's)
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=self.max_runs
            )
        return self._pool

    def start(self) -> None:
        """Have the worker ready (imports done) by the time a run needs it."""
        self._track(self._current_pool().submit(warm_up))

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        pool = self._current_pool()
        try:
            return await asyncio.wrap_future(self._track(pool.submit(function, *args)))
        except BrokenProcessPool:
            # the worker died (killed, out of memory): the next run starts a new one
            self._discard(pool)
            raise

    def _track(self, future: Future) -> Future:
        self._busy += 1
        loop = asyncio.get_running_loop()

        def finished(_: Future) -> None:
            try:
                loop.call_soon_threadsafe(self._done)
            except RuntimeError:
                pass  # the event loop that asked is closed: nothing is left to time

        future.add_done_callback(finished)
        return future

    def _done(self) -> None:
        self._busy -= 1
        if self._busy == 0 and self._pool is not None:
            self._idle_timer = asyncio.get_running_loop().call_later(self.idle_seconds, self._idle)

    def _idle(self) -> None:
        self.stop()
        release_free_memory()

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        """Ends the worker (a running fit is abandoned); the next run starts a new one."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._pool is not None:
            log.debug("model worker stopped")
            self._discard(self._pool)


def release_free_memory() -> None:
    """Hands the heap the runs freed back to the system (glibc keeps it otherwise, and
    the service's RSS would stay at its busiest); nothing where there is no glibc."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


MODEL_WORKER = ModelWorker()
