"""`ibflow`: one console script, a subcommand per service plus the dev-stack tools."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys

from dotenv import load_dotenv

from ibflow.services import MIGRATIONS, SERVICES

DEFAULT_WORKFLOW = "ibkr_trading_signal_workflow"


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_service(name: str) -> None:
    import uvicorn

    from shared.json_logging import configure_logging

    spec = SERVICES[name]
    configure_logging(name, os.environ.get("LOG_LEVEL", "INFO"))
    uvicorn.run(
        spec.app_factory,
        factory=True,
        host=os.environ.get("HTTP_HOST", "127.0.0.1"),
        port=spec.port,
        log_config=None,  # keep our JSON log lines
        access_log=False,
    )


async def migrate(database_url: str) -> dict[str, str]:
    heads = {}
    for service, target in MIGRATIONS.items():
        heads[service] = await _load(target)(database_url)
    return heads


async def create_topics() -> list[str]:
    from shared.kafka import ensure_topics
    from shared.settings import KafkaSettings

    return await ensure_topics(KafkaSettings())


def trigger(workflow: str, symbols: list[str] | None, gateway: str, wait: float) -> int:
    import time

    import httpx

    headers = {}
    if token := os.environ.get("IBFLOW_API_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    body = {"params": {"symbols": symbols}} if symbols else {}
    response = httpx.post(f"{gateway}/api/workflows/{workflow}/runs", json=body, headers=headers, timeout=10)
    if response.status_code != 202:
        print(f"trigger refused ({response.status_code}): {response.text}", file=sys.stderr)
        return 1
    execution_id = response.json()["execution_id"]
    print(execution_id)
    deadline = time.monotonic() + wait
    while wait and time.monotonic() < deadline:
        run = httpx.get(f"{gateway}/api/runs/{execution_id}", timeout=10)
        status = run.json().get("status") if run.status_code == 200 else None
        if status in ("succeeded", "failed"):
            print(json.dumps(run.json(), indent=2))
            return 0 if status == "succeeded" else 1
        time.sleep(1)
    return 0 if not wait else 2


def build_parser() -> argparse.ArgumentParser:
    from ibflow.fake_ib_gateway.cli import add_arguments

    parser = argparse.ArgumentParser(prog="ibflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in SERVICES:
        commands.add_parser(name, help=f"run the {name} service")
    up = commands.add_parser("up", help="start the whole stack on this machine (what `make run` does)")
    up.add_argument("--no-demo", action="store_true", help="do not trigger the demo run")
    commands.add_parser("migrate", help="upgrade every service's tables to the code's head")
    commands.add_parser("topics", help="create the Kafka topics")
    trig = commands.add_parser("trigger", help="start a run through the gateway")
    trig.add_argument("workflow", nargs="?", default=DEFAULT_WORKFLOW)
    trig.add_argument("--symbols", help="comma-separated symbols, e.g. AAPL,MSFT")
    trig.add_argument("--gateway", default=SERVICES["gateway"].url())
    trig.add_argument("--wait", type=float, default=0, help="seconds to wait for the run to end")
    fake = commands.add_parser("fake-gateway", help="serve the fake IB gateway (TWS API socket protocol)")
    add_arguments(fake)
    return parser


def subcommands() -> set[str]:
    parser = build_parser()
    return {name for action in parser._subparsers._group_actions for name in action.choices}


def main(argv: list[str] | None = None) -> int:
    load_dotenv(".env", override=False)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in SERVICES:
        run_service(args.command)
        return 0
    if args.command == "up":
        from ibflow.stack import run_stack

        return run_stack(demo=not args.no_demo)
    if args.command == "migrate":
        from sqlalchemy.exc import SQLAlchemyError

        from shared.database import describe_database, normalize_database_url

        url = os.environ.get("DATABASE_URL")
        if not url:
            parser.error("DATABASE_URL is not set")
        try:
            heads = asyncio.run(migrate(url))
        except (OSError, SQLAlchemyError) as exc:
            where = describe_database(normalize_database_url(url))["url"]
            print(f"migration failed on {where}: {exc.__cause__ or exc}", file=sys.stderr)
            return 1
        for service, head in heads.items():
            print(f"{service}: at {head}")
        return 0
    if args.command == "topics":
        created = asyncio.run(create_topics())
        print("created: " + (", ".join(created) or "nothing (all exist)"))
        return 0
    if args.command == "trigger":
        symbols = [s.strip().upper() for s in args.symbols.split(",")] if args.symbols else None
        return trigger(args.workflow, symbols, args.gateway, args.wait)
    if args.command == "fake-gateway":
        from ibflow.fake_ib_gateway.cli import serve

        asyncio.run(serve(args))
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
