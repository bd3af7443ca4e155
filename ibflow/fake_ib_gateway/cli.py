"""Command-line entry: `ibflow fake-gateway --host H --port N [--fault NAME ...]`.

`ibflow/cli.py` owns the parser; it calls `add_arguments(subparser)` and runs `serve(args)`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from .faults import ConnectivityFlap, FaultName, Faults
from .server import FakeIBGateway

DEFAULT_PORT = 4002  # IB Gateway's paper-trading port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on, 0 for any free one (default: %(default)s)"
    )
    parser.add_argument(
        "--fault", dest="faults", action="append", default=[], choices=[f.value for f in FaultName],
        help="misbehave this way (repeatable)",
    )
    parser.add_argument(
        "--unknown-symbol", dest="unknown_symbols", action="append", default=[], metavar="SYMBOL",
        help="with --fault unknown-contract: answer error 200 for this symbol (repeatable; default: every symbol)",
    )
    parser.add_argument(
        "--flap-every", type=float, default=ConnectivityFlap.every, metavar="SECONDS",
        help="with --fault flap/flap-data-lost: seconds between flaps (default: %(default)s)",
    )
    parser.add_argument(
        "--flap-outage", type=float, default=ConnectivityFlap.outage, metavar="SECONDS",
        help="with --fault flap/flap-data-lost: seconds between error 1100 and the restore (default: %(default)s)",
    )
    parser.add_argument(
        "--no-pacing", dest="enforce_pacing", action="store_false",
        help="do not enforce IBKR's historical-data pacing rules",
    )


async def serve(args: argparse.Namespace) -> None:
    try:
        faults = Faults.from_names(
            args.faults, unknown_symbols=args.unknown_symbols, flap_every=args.flap_every, flap_outage=args.flap_outage
        )
    except ValueError as exc:
        raise SystemExit(f"fake-gateway: {exc}") from exc
    await run(
        args.host, args.port, faults, enforce_pacing=args.enforce_pacing,
        on_ready=lambda gateway: print(f"fake IB gateway listening on {gateway.host}:{gateway.port}", flush=True),
    )


async def run(
    host: str,
    port: int,
    faults: Faults | None = None,
    *,
    enforce_pacing: bool = True,
    on_ready: Callable[[FakeIBGateway], None] | None = None,
) -> None:
    """Serve until cancelled."""
    gateway = FakeIBGateway(host, port, faults=faults, enforce_pacing=enforce_pacing)
    await gateway.start()
    try:
        if on_ready:
            on_ready(gateway)
        await asyncio.Event().wait()
    finally:
        await gateway.stop()
