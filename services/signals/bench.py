"""Benchmark: the trading-signal workflow's compute in this process, without the broker.

The same steps on the same sample-file data as a run of the service, with a list in
place of Kafka, a temporary artifact store and no previous run. This is the reference
the trigger -> visible time of a run through a real stack is compared with
(ibflow/bench_run.py). It prints the figures and returns them; it asserts nothing.

    python -m services.signals.bench [--runs N] [--symbols AAPL,MSFT,...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.signals.market_data.sample_file import SampleFileProvider
from services.signals.workflow.runner import RunResources, run_workflow
from services.signals.workflow.trading_signal import WORKFLOW, WORKFLOW_ID
from shared.artifact_store import ArtifactStore
from shared.events import Event, RunParams, RunRequested

SYMBOLS = ("AAPL", "MSFT", "IBM", "GOOG", "FB")
HISTORY_DAYS = 3 * 365  # the service's default


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between the sorted values."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class ComputeTimings:
    symbols: tuple[str, ...]
    seconds: list[float] = field(default_factory=list)  # wall time of each run
    cpu_seconds: list[float] = field(default_factory=list)  # this process's CPU time of each run
    steps: dict[str, list[float]] = field(default_factory=dict)  # each step's wall time, per run

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p95(self) -> float:
        return percentile(self.seconds, 95)

    def summary(self) -> str:
        lines = [
            f"in-process compute of {len(self.symbols)} symbols ({', '.join(self.symbols)}), {len(self.seconds)} runs:",
            f"  wall  p50 {self.p50:6.3f} s   p95 {self.p95:6.3f} s",
            f"  CPU   p50 {statistics.median(self.cpu_seconds):6.3f} s   (of this process, without the model worker)",
        ]
        lines += [f"  {name:<18} p50 {statistics.median(times):6.3f} s" for name, times in self.steps.items()]
        return "\n".join(lines)


class _StepTimes:
    """Publish in place of the broker: keeps the steps' own durations from their log lines."""

    def __init__(self, steps: dict[str, list[float]]) -> None:
        self.steps = steps

    async def __call__(self, event: Event) -> None:
        fields = getattr(event, "fields", None) or {}
        step = getattr(event, "step_name", None)
        if step and "duration_seconds" in fields and getattr(event, "message", "").startswith(f"step {step} "):
            self.steps.setdefault(step, []).append(fields["duration_seconds"])


async def _no_previous_run(**_: str) -> None:
    return None


async def time_compute(
    runs: int = 10, symbols: tuple[str, ...] = SYMBOLS, *, between: Callable[[], Awaitable[None]] | None = None
) -> ComputeTimings:
    """`between`, when given, is awaited after each timed run: what is compared with
    this compute runs interleaved with it, under the same load of a shared machine."""
    provider = SampleFileProvider()
    await provider.start()
    timings = ComputeTimings(symbols)
    publish = _StepTimes(timings.steps)
    with tempfile.TemporaryDirectory(prefix="ibflow-compute-bench-") as folder:
        resources = RunResources(
            provider=provider,
            store=ArtifactStore.from_url(Path(folder).as_uri()),
            watchlist=symbols,
            history_days=HISTORY_DAYS,
            step_timeout_seconds=600,
            inline_max_bytes=64 * 1024,
            previous_signals=_no_previous_run,
        )
        # one run first, untimed: imports and caches warm up as in a service that has run before
        for number in range(runs + 1):
            request = RunRequested(workflow_id=WORKFLOW_ID, execution_id=f"bench-compute-{number}",
                                   trigger="manual", params=RunParams(symbols=list(symbols)))
            started, cpu_started = time.perf_counter(), time.process_time()
            outcome = await run_workflow(WORKFLOW, request, resources, publish)
            if outcome.status != "succeeded":
                raise RuntimeError(f"the benchmark run ended {outcome.status}: {outcome.error}")
            if number:
                timings.seconds.append(time.perf_counter() - started)
                timings.cpu_seconds.append(time.process_time() - cpu_started)
                if between is not None:
                    await between()
            else:
                timings.steps.clear()
    await provider.stop()
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--symbols", default=",".join(SYMBOLS))
    args = parser.parse_args(argv)
    timings = asyncio.run(time_compute(args.runs, tuple(s.strip().upper() for s in args.symbols.split(","))))
    print(timings.summary())


if __name__ == "__main__":
    main()
