"""The model worker: fits run in a child process that comes and goes, and the
service's process never imports scikit-learn."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from concurrent.futures.process import BrokenProcessPool

import pytest

from services.signals.workflow.model_worker import ModelWorker

pytestmark = pytest.mark.unit

RUN_IN_PROCESS = """
import asyncio, sys
from services.signals.bench import time_compute
asyncio.run(time_compute(runs=1, symbols=("AAPL", "IBM")))
heavy = sorted(m for m in ("sklearn", "scipy", "joblib", "matplotlib") if m in sys.modules)
assert not heavy, f"imported into the service's process: {heavy}"
"""


def test_a_whole_run_leaves_no_model_library_in_the_process():
    result = subprocess.run([sys.executable, "-c", RUN_IN_PROCESS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


async def test_the_worker_stops_when_idle_and_starts_again_for_the_next_run():
    worker = ModelWorker(idle_seconds=0.2)
    assert await worker.run(os.getpid) != os.getpid()
    assert worker.running
    for _ in range(200):
        if not worker.running:
            break
        await asyncio.sleep(0.05)
    assert not worker.running
    assert await worker.run(sum, [1, 2]) == 3
    worker.stop()


async def test_the_worker_is_replaced_after_its_runs():
    worker = ModelWorker(max_runs=2)
    pids = [await worker.run(os.getpid) for _ in range(4)]
    assert pids[0] == pids[1] != pids[2] == pids[3]
    worker.stop()


async def test_a_dead_worker_fails_one_call_and_the_next_gets_a_new_one():
    worker = ModelWorker()
    pid = await worker.run(os.getpid)
    with pytest.raises(BrokenProcessPool):
        await worker.run(os.kill, pid, signal.SIGKILL)
    assert await worker.run(os.getpid) != pid
    worker.stop()
