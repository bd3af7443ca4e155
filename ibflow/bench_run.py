"""Benchmark: a run through a real stack against its reference, the gateway hop, idle memory.

One stack (ibflow.stack.Stack on free ports, with its own PostgreSQL and broker, the
sample-file provider) and, in the same run:

- trigger -> visible: from the POST that triggers a run until every artifact of the run
  is listed by the gateway (and until its `signals` artifact is), next to the same
  workflow's compute in this process without the broker (services/signals/bench.py),
  the two taking turns so that both see the same load of a shared machine;
- the gateway hop: the same one-row request to the artifacts service directly and
  through the gateway, interleaved;
- idle RSS of every service (with its child processes): just started, and after
  RSS_RUNS more runs of one symbol.

It prints the figures and returns them; nothing is asserted.

    python -m ibflow.bench_run [--runs N] [--rss-runs N] [--hop-requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from ibflow.stack import Stack
from services.signals.bench import SYMBOLS, ComputeTimings, percentile, time_compute
from services.signals.workflow.model_worker import IDLE_SECONDS
from services.signals.workflow.trading_signal import WORKFLOW_ID

# What one run of the workflow lists, besides one chart per symbol.
RUN_ARTIFACTS = frozenset({
    "market_data", "market_data_summary", "features.csv", "features", "model", "model.joblib",
    "walk_forward_folds", "signals", "report",
})
POLL_SECONDS = 0.01
RUN_TIMEOUT_SECONDS = 300
SERVICES = ("artifacts", "scheduler", "signals", "gateway")


@dataclass
class Latencies:
    label: str
    seconds: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p95(self) -> float:
        return percentile(self.seconds, 95)

    def line(self, unit: str = "s") -> str:
        scale, digits = (1000, 2) if unit == "ms" else (1, 3)
        return (f"  {self.label:<34} p50 {self.p50 * scale:8.{digits}f} {unit}   "
                f"p95 {self.p95 * scale:8.{digits}f} {unit}   ({len(self.seconds)})")


@dataclass
class RunBench:
    compute: ComputeTimings
    visible: Latencies
    signals_visible: Latencies
    service_compute: Latencies  # the runs' own duration in the signals service
    direct: Latencies
    through_gateway: Latencies
    service_cpu_ms: float  # the artifacts service's CPU per one-row answer
    gateway_cpu_ms: float  # the gateway's CPU per forwarded request
    rss_fresh: dict[str, float]
    rss_busy: dict[str, float]  # right after the runs, the model worker still up
    rss_after: dict[str, float]
    rss_runs: int

    @property
    def overhead_ratio(self) -> float:
        return self.visible.p50 / self.compute.p50

    @property
    def hop_ms(self) -> float:
        return (self.through_gateway.p50 - self.direct.p50) * 1000

    def summary(self) -> str:
        lines = [self.compute.summary(), "", f"through the stack, {len(self.compute.symbols)} symbols:",
                 self.visible.line(), self.signals_visible.line(), self.service_compute.line(),
                 f"  trigger -> all visible p50 / in-process compute p50: {self.overhead_ratio:.2f}x "
                 f"(plumbing {self.visible.p50 - self.compute.p50:+.3f} s)",
                 "", "one-row answer (GET /api/artifacts/?limit=1):",
                 self.direct.line("ms"), self.through_gateway.line("ms"),
                 f"  added by the gateway: p50 {self.hop_ms:+.2f} ms   "
                 f"p95 {(self.through_gateway.p95 - self.direct.p95) * 1000:+.2f} ms",
                 f"  CPU per request: artifacts service {self.service_cpu_ms:.2f} ms, "
                 f"gateway {self.gateway_cpu_ms:.2f} ms per forwarded request",
                 "", f"RSS (MB, with child processes): fresh; right after {self.rss_runs} runs; idle again "
                 f"(the model worker stops after {IDLE_SECONDS:g} s without work)"]
        lines += [f"  {name:<10} {self.rss_fresh[name]:7.1f} {self.rss_busy[name]:9.1f} {self.rss_after[name]:9.1f}"
                  for name in self.rss_fresh]
        return "\n".join(lines)

    def readme_rows(self) -> list[str]:
        rss = ", ".join(f"{name} {self.rss_fresh[name]:.0f} → {self.rss_after[name]:.0f}" for name in self.rss_fresh)
        busy = ", ".join(f"{name} {self.rss_busy[name]:.0f}" for name in self.rss_busy)
        n = len(self.compute.symbols)
        return [
            f"| trigger → all artifacts visible, {n} symbols | p50 {self.visible.p50:.2f} s, "
            f"p95 {self.visible.p95:.2f} s ({self.overhead_ratio:.2f}× compute) | in-process compute p50 "
            f"{self.compute.p50:.2f} s, p95 {self.compute.p95:.2f} s |",
            f"| trigger → `signals` visible, {n} symbols | p50 {self.signals_visible.p50:.2f} s | "
            f"all artifacts p50 {self.visible.p50:.2f} s |",
            f"| gateway hop, one-row answer | {self.hop_ms:+.2f} ms p50 (through: p50 "
            f"{self.through_gateway.p50 * 1000:.2f} ms, p95 {self.through_gateway.p95 * 1000:.2f} ms); "
            f"gateway CPU {self.gateway_cpu_ms:.2f} ms per request | "
            f"direct p50 {self.direct.p50 * 1000:.2f} ms, p95 {self.direct.p95 * 1000:.2f} ms; "
            f"service CPU {self.service_cpu_ms:.2f} ms per request |",
            f"| idle RSS, MB: fresh → idle after {self.rss_runs} runs | {rss} | right after the runs: {busy} |",
        ]


def bench_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "IBKR_HOST", "IBKR_PORT", "IBFLOW_API_TOKEN"}}
    # no scheduled run in the middle of the figures; the in-process reference's data
    env |= {"WORKFLOW_SCHEDULE": "0 9 1 1 *", "MARKET_DATA_PROVIDER": "sample_file", "LOG_LEVEL": "WARNING"}
    return env


async def run_and_wait(client: httpx.AsyncClient, symbols: tuple[str, ...]) -> tuple[float, float]:
    """(seconds until `signals` is listed, seconds until every artifact is) from the trigger."""
    expected = RUN_ARTIFACTS | {f"chart_{s}" for s in symbols}
    started = time.perf_counter()
    response = await client.post(f"/api/workflows/{WORKFLOW_ID}/runs", json={"params": {"symbols": list(symbols)}})
    if response.status_code != 202:
        raise RuntimeError(f"trigger refused ({response.status_code}): {response.text}")
    execution_id = response.json()["execution_id"]
    signals_at = None
    while time.perf_counter() - started < RUN_TIMEOUT_SECONDS:
        listing = await client.get("/api/artifacts/", params={"execution_id": execution_id, "limit": 100})
        names = {a["name"] for a in listing.json()["artifacts"]}
        now = time.perf_counter() - started
        if signals_at is None and "signals" in names:
            signals_at = now
        if expected <= names:
            return signals_at, now
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"run {execution_id} not visible after {RUN_TIMEOUT_SECONDS} s")


async def service_durations(client: httpx.AsyncClient, count: int) -> list[float]:
    """The latest runs' own duration (started -> finished, by the signals service's events)."""
    runs = (await client.get("/api/runs", params={"limit": count})).json()["runs"]
    return [r["duration_seconds"] for r in runs if r["duration_seconds"] is not None]


async def time_runs(gateway_url: str, runs: int, symbols: tuple[str, ...]) -> tuple[ComputeTimings, Latencies,
                                                                                   Latencies, Latencies]:
    """The in-process compute and runs through the stack, one of each in turn."""
    visible = Latencies("trigger -> all artifacts visible")
    signals_visible = Latencies("trigger -> `signals` visible")
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        await run_and_wait(client, symbols)  # untimed: the first run warms the services up

        async def one_through_the_stack() -> None:
            signals_at, all_at = await run_and_wait(client, symbols)
            signals_visible.seconds.append(signals_at)
            visible.seconds.append(all_at)

        compute = await time_compute(runs, symbols, between=one_through_the_stack)
        service = Latencies("run started -> finished (signals)")
        service.seconds = (await service_durations(client, runs))[:runs]
    return compute, visible, signals_visible, service


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def time_hop(stack: Stack, requests: int) -> tuple[Latencies, Latencies, float, float]:
    """Direct and through-the-gateway latencies, interleaved, and the CPU each of the
    two services spent per request (milliseconds): the part a loaded machine does not
    inflate, since waiting for a core costs no CPU."""
    direct, through = Latencies("direct to the artifacts service"), Latencies("through the gateway")
    direct_url, gateway_url = stack.env["ARTIFACTS_URL"], stack.gateway_url
    path, params = "/api/artifacts/", {"limit": 1}
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(20):  # connections open, caches warm
            await client.get(direct_url + path, params=params)
            await client.get(gateway_url + path, params=params)
        cpu_before = {name: cpu_seconds(stack.pid(name)) for name in ("artifacts", "gateway")}
        for _ in range(requests):
            for base, into in ((direct_url, direct), (gateway_url, through)):
                started = time.perf_counter()
                response = await client.get(base + path, params=params)
                into.seconds.append(time.perf_counter() - started)
                response.raise_for_status()
        spent = {name: cpu_seconds(stack.pid(name)) - before for name, before in cpu_before.items()}
    # the artifacts service answered every request, the gateway forwarded half of them
    return direct, through, spent["artifacts"] / (2 * requests) * 1000, spent["gateway"] / requests * 1000


def idle_rss(stack: Stack, settle_seconds: float = 3.0) -> dict[str, float]:
    """RSS in MB of each service with its children (a worker process counts)."""
    time.sleep(settle_seconds)
    sizes = {}
    for name in SERVICES:
        process = psutil.Process(stack.pid(name))
        sizes[name] = sum(p.memory_info().rss for p in (process, *process.children(recursive=True))) / 2**20
    return sizes


async def run_bench(stack: Stack, *, runs: int, rss_runs: int, hop_requests: int,
                    symbols: tuple[str, ...] = SYMBOLS) -> RunBench:
    rss_fresh = idle_rss(stack)
    compute, visible, signals_visible, service = await time_runs(stack.gateway_url, runs, symbols)
    direct, through, service_cpu_ms, gateway_cpu_ms = await time_hop(stack, hop_requests)
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        for _ in range(rss_runs):
            await run_and_wait(client, symbols[:1])
    rss_busy = idle_rss(stack, settle_seconds=1)
    rss_after = idle_rss(stack, settle_seconds=IDLE_SECONDS + 5)
    return RunBench(compute, visible, signals_visible, service, direct, through, service_cpu_ms, gateway_cpu_ms,
                    rss_fresh, rss_busy, rss_after, rss_runs + runs + 1)


def started_stack(workdir: Path) -> Stack:
    stack = Stack(workdir=workdir, env=bench_env(), free_ports=True, durable_postgres=False)
    stack.start()
    return stack


async def run_section(bench) -> None:
    """`make bench`'s `runs` section: adds its README rows to `bench.readme_rows`."""
    print("== a run through the stack against its compute; the gateway hop; idle memory ==")
    # started from this thread: the stack's children are tied to the thread that spawns them
    stack = started_stack(bench.workdir / "run-stack")
    try:
        result = await run_bench(stack, runs=10, rss_runs=100, hop_requests=300)
    finally:
        stack.stop()
    print(result.summary())
    bench.readme_rows += result.readme_rows()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs of 5 symbols, each way")
    parser.add_argument("--rss-runs", type=int, default=100, help="runs of one symbol before the second RSS")
    parser.add_argument("--hop-requests", type=int, default=300)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ibflow-bench-run-"))
    stack = started_stack(workdir)
    try:
        result = asyncio.run(run_bench(stack, runs=args.runs, rss_runs=args.rss_runs, hop_requests=args.hop_requests))
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(result.summary())
    print("\n".join(result.readme_rows()))


if __name__ == "__main__":
    main()
