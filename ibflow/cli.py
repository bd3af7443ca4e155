"""`ibflow`: one console script, a subcommand per service plus the dev-stack tools."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import math
import os
import sys

from dotenv import load_dotenv

from ibflow import stack_config
from ibflow.services import MIGRATIONS, SERVICES

DEFAULT_WORKFLOW = "ibkr_trading_signal_workflow"
# libuv's event loop and the C HTTP parser: the Python defaults cost a few ms per request.
UVICORN_SERVER = {"loop": "uvloop", "http": "httptools"}


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
        **UVICORN_SERVER,
    )


async def migrate(database_url: str) -> dict[str, str]:
    heads = {}
    for service, module in MIGRATIONS.items():
        heads[service] = await importlib.import_module(module).migrate(database_url)
    return heads


def build_parser() -> argparse.ArgumentParser:
    from ibflow.fake_ib_gateway.cli import add_arguments

    parser = argparse.ArgumentParser(prog="ibflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in SERVICES:
        service = commands.add_parser(name, help=f"run the {name} service")
        if name == "artifacts":
            add_artifacts_listing(service)
    runs = commands.add_parser("runs", help="the stored runs, newest first (a table)")
    runs.add_argument("--workflow", help="only this workflow's runs")
    runs.add_argument("--status", help="only runs in this state: queued, running, succeeded, partial, failed, "
                                       "external, abandoned")
    runs.add_argument("--limit", type=int, default=20, help="how many (default 20, at most 500)")
    add_gateway_option(runs)
    run = commands.add_parser("run", help="one run: its steps, failed items and artifacts")
    run.add_argument("execution_id")
    add_gateway_option(run)
    logs = commands.add_parser("logs", help="a run's log lines, as the run page shows them")
    logs.add_argument("execution_id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the run ends")
    logs.add_argument("--level", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
                      help="only lines at this level or above")
    logs.add_argument("--step", help="only this step's lines")
    add_gateway_option(logs)
    up = commands.add_parser("up", help="start the whole stack on this machine (what `make run` does)")
    up.add_argument("--no-demo", action="store_true", help="do not trigger the demo run")
    mig = commands.add_parser("migrate", help="every service's tables to the code's head, or to a revision "
                                              "(--to, down too), or where they are (--status)")
    what = mig.add_mutually_exclusive_group()
    what.add_argument("--to", metavar="REVISION",
                      help="a revision (or unique prefix), head, base, +N or -N; downgrades too")
    what.add_argument("--status", action="store_true",
                      help="each service's revisions: applied, current, pending (exit 1 when not at head)")
    mig.add_argument("--service", choices=sorted(MIGRATIONS), help="only this service's tables")
    mig.add_argument("--yes", action="store_true", help="do not ask before a downgrade")
    commands.add_parser("topics", help="create the Kafka topics")
    trig = commands.add_parser("trigger", help="start a run through the gateway")
    trig.add_argument("workflow", nargs="?", default=DEFAULT_WORKFLOW)
    trig.add_argument("--symbols", help="comma-separated symbols, e.g. AAPL,MSFT")
    trig.add_argument("--gateway", help="gateway URL (default: GATEWAY_URL, else the running stack's)")
    trig.add_argument("--wait", type=float, default=0,
                      help="seconds to follow the run; exit 0 succeeded, 1 failed, 2 partial, "
                           "3 still running, 4 not triggered")
    back = commands.add_parser("backfill", help="run a workflow once per trading session of a date range")
    back.add_argument("workflow", nargs="?", default=DEFAULT_WORKFLOW)
    back.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    back.add_argument("--end", required=True, help="last date, YYYY-MM-DD (included)")
    back.add_argument("--symbols", help="comma-separated symbols, e.g. AAPL,MSFT (default: the schedule's)")
    back.add_argument("--max-active-runs", type=int, default=4, help="runs requested and not ended at once (4)")
    back.add_argument("--wait", type=float, nargs="?", const=math.inf, default=0, metavar="SECONDS",
                      help="follow it with a progress bar (until it ends, or SECONDS) and show its scorecard; "
                           "exit 0 succeeded, 1 failed or cancelled, 2 partial, 3 still running, 4 not started")
    add_gateway_option(back)
    dead = commands.add_parser("deadletter", help="list or replay what consumers dead-lettered")
    dead_commands = dead.add_subparsers(dest="deadletter_command", required=True)
    listing = dead_commands.add_parser("list", help="the most recent dead letters, oldest first")
    listing.add_argument("--limit", type=int, default=50, help="how many of the most recent (default 50)")
    listing.add_argument("--topic", help="only those that came from this topic, e.g. ibflow.artifacts")
    replay = dead_commands.add_parser("replay", help="publish dead letters' original bytes to their source topic")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="dead_letter_id", help="one dead letter (its id, or a unique prefix of it)")
    which.add_argument("--all", action="store_true", help="every dead letter (narrow with --topic)")
    replay.add_argument("--topic", help="with --all: only those that came from this topic")
    replay.add_argument("--yes", action="store_true", help="do not ask before publishing")
    commands.add_parser("config", help="the settings the tool commands use, and where each comes from")
    doc = commands.add_parser("doctor", help="ask every running service and the broker how they are really "
                                             "set up; exit 1 when something is wrong, with the fix")
    doc.add_argument("--json", action="store_true", help="everything found, as JSON")
    doc.add_argument("--service-urls", metavar="NAME=URL,...",
                     help="ask these services directly, e.g. scheduler=http://127.0.0.1:8002")
    add_gateway_option(doc)
    fake = commands.add_parser("fake-gateway", help="serve the fake IB gateway (TWS API socket protocol)")
    add_arguments(fake)
    return parser


def add_gateway_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway", help="gateway URL (default: GATEWAY_URL, else the running stack's)")


ARTIFACT_FILTERS = (("--workflow", "workflow_id"), ("--execution", "execution_id"), ("--kind", "kind"),
                    ("--step", "step_name"), ("--dag-id", "dag_id"), ("--task-id", "task_id"))


def add_artifacts_listing(parser: argparse.ArgumentParser) -> None:
    """`ibflow artifacts` alone runs the service (the containers' command); any of these
    options lists stored artifacts, or downloads one, instead."""
    parser.description = ("Without options: run the artifacts service. With a filter, --limit or --download: "
                          "list the stored artifacts, newest first, or download one's content.")
    for option, field in ARTIFACT_FILTERS:
        parser.add_argument(option, dest=field, help=f"list only artifacts with this {field}")
    parser.add_argument("--limit", type=int, help="list this many (default 50)")
    parser.add_argument("--download", metavar="ARTIFACT_ID", help="save this artifact's content")
    parser.add_argument("-o", "--output", metavar="FILE", help="with --download: where (- for stdout; "
                                                               "default: the artifact's name)")
    add_gateway_option(parser)


def wants_artifact_listing(args: argparse.Namespace) -> bool:
    return any(getattr(args, field, None) for _, field in ARTIFACT_FILTERS) or bool(
        getattr(args, "limit", None) or getattr(args, "download", None) or getattr(args, "output", None)
        or getattr(args, "gateway", None))


def subcommands() -> set[str]:
    parser = build_parser()
    return {name for action in parser._subparsers._group_actions for name in action.choices}


def fail(command: str, message: str) -> int:
    print(f"ibflow {command}: {message}", file=sys.stderr)
    return 1


def scrub(text: str, *urls: str) -> str:
    """An error message safe to show: no password of the URLs it may quote."""
    from urllib.parse import urlsplit

    for url in urls:
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            text = text.replace(password, "***")
    return text


def migrate_command(args: argparse.Namespace, resolved: stack_config.Resolved) -> int:
    from rich.console import Console

    from ibflow import migrations_cli
    from shared.database import DatabaseUrlError, describe_database, normalize_database_url

    url = os.environ.get("DATABASE_URL")
    if not url:
        return fail("migrate", resolved.hint("DATABASE_URL"))
    try:
        where = describe_database(normalize_database_url(url))["url"]
        if args.status:
            return migrations_cli.show_status(url, args.service, Console())
        if args.to:
            return migrations_cli.migrate_to(url, args.to, args.service, yes=args.yes, console=Console(),
                                             confirm=confirm)
        heads = asyncio.run(migrate(url)) if not args.service else {
            args.service: asyncio.run(importlib.import_module(MIGRATIONS[args.service]).migrate(url))}
    except DatabaseUrlError as exc:
        return fail("migrate", str(exc))
    except migrations_cli.MigrationRefused as exc:
        return fail("migrate", str(exc))
    except Exception as exc:  # any way of not reaching the database: say where and what to set
        reason = scrub(str(exc.__cause__ or exc), url)
        return fail("migrate", f"migration failed on {where}: {reason}\n{resolved.hint('DATABASE_URL')}")
    for service, head in heads.items():
        print(f"{service}: at {head}")
    return 0


def kafka_settings(command: str):
    """KafkaSettings, or an exit code after saying which variable is wrong."""
    from pydantic import ValidationError

    from shared.settings import KafkaSettings

    try:
        return KafkaSettings()
    except ValidationError as exc:
        return fail(command, f"invalid Kafka settings: {exc}")


def unreachable_broker(command: str, resolved: stack_config.Resolved, exc: BaseException) -> int:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092 (the default)")
    return fail(command, f"cannot reach the Kafka broker at {servers}: {exc}\n"
                         f"{resolved.hint('KAFKA_BOOTSTRAP_SERVERS')}")


def topics_command(resolved: stack_config.Resolved) -> int:
    from aiokafka.errors import KafkaError

    from shared.kafka import ensure_topics

    settings = kafka_settings("topics")
    if isinstance(settings, int):
        return settings
    try:
        created = asyncio.run(ensure_topics(settings))
    except (KafkaError, OSError) as exc:
        return unreachable_broker("topics", resolved, exc)
    print("created: " + (", ".join(created) or "nothing (all exist)"))
    return 0


def trigger_command(args: argparse.Namespace, resolved: stack_config.Resolved) -> int:
    import httpx
    from rich.console import Console

    from ibflow.trigger import Gateway, trigger

    gateway_url = (args.gateway or SERVICES["gateway"].url()).rstrip("/")
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    hint = "check --gateway" if args.gateway else resolved.hint("GATEWAY_URL")
    with httpx.Client() as client:
        return trigger(Gateway(client, gateway_url, os.environ.get("IBFLOW_API_TOKEN")),
                       args.workflow, symbols, args.wait, Console(), unreachable_hint=hint)


def backfill_command(args: argparse.Namespace, resolved: stack_config.Resolved) -> int:
    import httpx
    from rich.console import Console

    from ibflow.backfill import backfill
    from ibflow.trigger import Gateway

    gateway_url = (args.gateway or SERVICES["gateway"].url()).rstrip("/")
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    hint = "check --gateway" if args.gateway else resolved.hint("GATEWAY_URL")
    with httpx.Client() as client:
        return backfill(Gateway(client, gateway_url, os.environ.get("IBFLOW_API_TOKEN")), args.workflow,
                        start_date=args.start, end_date=args.end, symbols=symbols,
                        max_active_runs=args.max_active_runs, wait=args.wait, console=Console(), unreachable_hint=hint)


def gateway_command(args: argparse.Namespace, resolved: stack_config.Resolved) -> int:
    """`runs`, `run`, `logs` and `artifacts` (listing): read the API through the gateway."""
    import httpx
    from rich.console import Console

    from ibflow import runs_cli
    from ibflow.trigger import Gateway, GatewayError, GatewayUnreachable

    if getattr(args, "output", None) and not getattr(args, "download", None):
        return fail(args.command, "-o/--output goes with --download ARTIFACT_ID")
    gateway_url = (args.gateway or SERVICES["gateway"].url()).rstrip("/")
    hint = "check --gateway" if args.gateway else resolved.hint("GATEWAY_URL")
    console = Console()
    try:
        with httpx.Client() as client:
            gateway = Gateway(client, gateway_url, os.environ.get("IBFLOW_API_TOKEN"))
            if args.command == "runs":
                runs_cli.list_runs(gateway, console, workflow=args.workflow, status=args.status,
                                   limit=args.limit)
            elif args.command == "run":
                runs_cli.show_run(gateway, console, args.execution_id)
            elif args.command == "logs":
                return logs_command(args, gateway, console)
            elif args.download:
                done = runs_cli.download_artifact(gateway, args.download, args.output)
                if done.path != "-":
                    print(f"saved {done.size_bytes} bytes to {done.path} (sha256 {done.sha256})", file=sys.stderr)
            else:
                filters = {field: getattr(args, field) for _, field in ARTIFACT_FILTERS if getattr(args, field)}
                runs_cli.list_artifacts(gateway, console, filters=filters, limit=args.limit or 50)
    except GatewayUnreachable as exc:
        return fail(args.command, f"{exc}\n{hint}")
    except GatewayError as exc:
        return fail(args.command, str(exc))
    except OSError as exc:  # the output file
        return fail(args.command, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    except KeyboardInterrupt:
        return 130
    return 0


def logs_command(args: argparse.Namespace, gateway, console) -> int:
    from ibflow import runs_cli

    if not args.follow:
        printed = runs_cli.print_logs(gateway, console, args.execution_id, level=args.level, step=args.step)
        print(f"{printed} line(s)", file=sys.stderr)
        return 0
    end = runs_cli.follow_logs(gateway, console, args.execution_id, level=args.level, step=args.step)
    if end:
        print(f"run {end.get('execution_id', args.execution_id)} {end.get('status', 'ended')}", file=sys.stderr)
    return 0


def doctor_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ibflow import doctor

    try:
        direct = doctor.parse_service_urls(args.service_urls)
    except doctor.DoctorError as exc:
        return fail("doctor", str(exc))
    gateway_url = (args.gateway or SERVICES["gateway"].url()).rstrip("/")
    fallback = {name: SERVICES[name].url().rstrip("/") for name in doctor.SERVICES}
    partitions = os.environ.get("KAFKA_TOPIC_PARTITIONS", "")
    return doctor.doctor(gateway_url, direct, fallback, os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
                         int(partitions) if partitions.isdigit() else 3, json_output=args.json, console=Console())


def deadletter_command(args: argparse.Namespace, resolved: stack_config.Resolved) -> int:
    from aiokafka.errors import KafkaError
    from rich.console import Console

    from ibflow import deadletter
    from ibflow.terminal_table import print_table

    command = f"deadletter {args.deadletter_command}"
    settings = kafka_settings(command)
    if isinstance(settings, int):
        return settings
    try:
        reading = asyncio.run(deadletter.read_letters(settings, source_topic=args.topic))
        if args.deadletter_command == "list":
            shown = reading.letters[-args.limit:] if args.limit > 0 else []
            console = Console()
            print_table(console, deadletter.LIST_COLUMNS, [found.cells() for found in shown])
            skipped = f", {reading.unreadable} unreadable record(s) skipped" if reading.unreadable else ""
            print(f"{len(shown)} of {len(reading.letters)} dead letter(s) shown{skipped}", file=sys.stderr)
            return 0
        chosen = deadletter.select(reading.letters, args.dead_letter_id)
        deadletter.check_replayable(chosen, reading.existing_topics)
        if not chosen:
            print("nothing to replay")
            return 0
        if not args.yes and not confirm(f"Replay {len(chosen)} dead letter(s) to their source topics?"):
            return fail(command, "not replayed (pass --yes to replay without asking)")
        for done in asyncio.run(deadletter.replay(settings, chosen)):
            print(f"replayed {done.letter.id} to {done.letter.letter.source_topic}"
                  f"[{done.partition}]@{done.offset}")
        return 0
    except deadletter.DeadLetterError as exc:
        return fail(command, str(exc))
    except (KafkaError, OSError) as exc:
        return unreachable_broker(command, resolved, exc)


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def config_command(resolved: stack_config.Resolved) -> int:
    from rich.console import Console

    from ibflow.terminal_table import print_table

    rows = [
        (name, stack_config.mask(name, os.environ[name]), resolved.source(name))
        for name in stack_config.RECORDED if os.environ.get(name)
    ]
    print_table(Console(), ("variable", "value", "from"), rows)
    print(f"stack: {resolved.stack.note}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    explicit = set(os.environ)
    load_dotenv(".env", override=False)
    from_dotenv = frozenset(name for name in os.environ if name not in explicit)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in SERVICES and not (args.command == "artifacts" and wants_artifact_listing(args)):
        run_service(args.command)
        return 0
    if args.command == "up":
        from ibflow.stack import run_stack

        return run_stack(demo=not args.no_demo)
    if args.command == "fake-gateway":
        from ibflow.fake_ib_gateway.cli import serve

        asyncio.run(serve(args))
        return 0
    # The stack's own processes get everything from it; the tools are its clients.
    # Their failures are reported once, in words: the Kafka client's own log lines would repeat them.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    resolved = stack_config.apply(os.environ, from_dotenv)
    if args.command == "migrate":
        return migrate_command(args, resolved)
    if args.command == "topics":
        return topics_command(resolved)
    if args.command == "trigger":
        return trigger_command(args, resolved)
    if args.command == "backfill":
        return backfill_command(args, resolved)
    if args.command in ("runs", "run", "logs", "artifacts"):
        return gateway_command(args, resolved)
    if args.command == "deadletter":
        return deadletter_command(args, resolved)
    if args.command == "config":
        return config_command(resolved)
    if args.command == "doctor":
        return doctor_command(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
