"""`ibflow doctor`: ask every running service how it is really configured and connected,
ask the broker what it holds, and say what is wrong and how to fix it.

The services are asked through the gateway's `/health?full=true` (the one public
port), or directly at `--service-urls name=url,...`; when the gateway does not answer,
each service is tried at its own URL (ARTIFACTS_URL, ... or the running stack's). The
broker is asked by doctor itself, at the bootstrap servers the services report (the
tools' own KAFKA_BOOTSTRAP_SERVERS when they do not agree): topics and their partitions,
and each ibflow consumer group with its lag where the broker can tell it. tansu's end
offsets are unreliable (docs/broker-notes.md), so there the lag is "unknown on this
broker" rather than a wrong number.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console

from ibflow.doctor_checks import GROUPS, SERVICES, BrokerFacts, Facts, Finding, GroupFacts, conclude
from ibflow.log_lines import safe
from ibflow.terminal_table import print_table
from shared import topics

HEALTH_TIMEOUT_SECONDS = 20.0
BROKER_TIMEOUT_SECONDS = 8.0
EXIT_OK = 0
EXIT_PROBLEMS = 1
# The topics each ibflow consumer group reads.
GROUP_TOPICS = {
    "artifacts": (topics.RUNS_REQUESTED, topics.RUNS_EVENTS, topics.ARTIFACTS, topics.LOGS),
    "signals": (topics.RUNS_REQUESTED,),
    "scheduler": (topics.RUNS_EVENTS,),
}
_RANK = {"ok": 0, "degraded": 1, "starting": 2, "unhealthy": 3}


class DoctorError(Exception):
    """Doctor itself cannot run (bad arguments); the message says why."""


def parse_service_urls(text: str | None) -> dict[str, str]:
    """`artifacts=http://a:8001,scheduler=http://s:8002` -> {name: url}."""
    urls: dict[str, str] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        name, sep, url = part.partition("=")
        name = name.strip()
        if not sep or name not in (*SERVICES, "gateway") or not url.strip().startswith(("http://", "https://")):
            raise DoctorError(f"--service-urls: {part!r} is not NAME=http(s)://..., NAME one of "
                              f"{', '.join((*SERVICES, 'gateway'))}")
        urls[name] = url.strip().rstrip("/")
    return urls


def _get_json(client: httpx.Client, url: str) -> tuple[dict[str, Any] | None, str | None]:
    """A health report (services answer 503 with the same body when unhealthy), or why none."""
    try:
        response = client.get(url, timeout=HEALTH_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    try:
        body = response.json()
    except ValueError:
        return None, f"answered {response.status_code} without a health report"
    if not isinstance(body, dict) or "components" not in body:
        return None, f"answered {response.status_code} without a health report"
    return body, None


def ask_services(client: httpx.Client, gateway_url: str, direct: Mapping[str, str],
                 fallback: Mapping[str, str]) -> tuple[dict, dict, dict]:
    """(reports, errors, where each was asked), gateway first, then direct and fallbacks."""
    reports: dict[str, dict | None] = {}
    errors: dict[str, str] = {}
    asked: dict[str, str] = {}
    gateway_url = direct.get("gateway", gateway_url)
    system, why = _get_json(client, f"{gateway_url}/health?full=true")
    asked["gateway"] = gateway_url
    if system is None:
        reports["gateway"], errors["gateway"] = None, why or "no answer"
    else:
        components = system.get("components") or {}
        own = {name: components[name] for name in ("broker",) if isinstance(components.get(name), dict)}
        if isinstance(components.get("gateway"), dict):
            own["settings"] = components["gateway"]
        status = max((c.get("status", "ok") for c in own.values()), key=lambda s: _RANK.get(s, 3), default="ok")
        reports["gateway"] = {"status": status, "components": own}
    for name in SERVICES:
        if name in direct:
            reports[name], why = _get_json(client, f"{direct[name]}/health")
            asked[name] = direct[name]
        elif system is not None and isinstance((component := (system.get("components") or {}).get(name)), dict):
            detail = component.get("detail") or {}
            asked[name] = f"{detail.get('url', '?')} via the gateway"
            if isinstance(detail.get("report"), dict):
                reports[name], why = detail["report"], None
            elif component.get("status") == "unhealthy" and component.get("error"):
                reports[name], why = None, component["error"]
            else:  # a gateway from before `full`: ask the service itself
                reports[name], why = _get_json(client, f"{fallback[name]}/health")
                asked[name] = fallback[name]
        else:
            reports[name], why = _get_json(client, f"{fallback[name]}/health")
            asked[name] = fallback[name]
        if reports[name] is None:
            errors[name] = why or "no answer"
    return reports, errors, asked


def reported_bootstrap(reports: Mapping[str, dict | None]) -> set[str]:
    found = set()
    for report in reports.values():
        broker = ((report or {}).get("components") or {}).get("broker") or {}
        servers = (broker.get("detail") or {}).get("bootstrap_servers") if isinstance(broker, dict) else None
        if servers:
            found.add(servers)
    return found


def group_ids(reports: Mapping[str, dict | None]) -> dict[str, str]:
    """Each consuming service's group, as it reports it (its default otherwise)."""
    ids = dict(GROUPS)
    artifacts = ((reports.get("artifacts") or {}).get("components") or {}).get("consumer") or {}
    if isinstance(artifacts, dict) and (artifacts.get("detail") or {}).get("group_id"):
        ids["artifacts"] = artifacts["detail"]["group_id"]
    signals = ((reports.get("signals") or {}).get("components") or {}).get("settings") or {}
    if isinstance(signals, dict) and (signals.get("detail") or {}).get("non_default", {}).get(
            "SIGNALS_CONSUMER_GROUP_ID"):
        ids["signals"] = signals["detail"]["non_default"]["SIGNALS_CONSUMER_GROUP_ID"]
    return ids


async def ask_broker(bootstrap: str, groups: Mapping[str, str]) -> BrokerFacts:
    facts = BrokerFacts(bootstrap=bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="ibflow-doctor",
                                request_timeout_ms=int(BROKER_TIMEOUT_SECONDS * 1000))
    try:
        async with asyncio.timeout(BROKER_TIMEOUT_SECONDS * 3):
            await admin.start()
            facts.cluster_id = (await admin.describe_cluster()).get("cluster_id")
            present = [t for t in await admin.list_topics() if t in topics.ALL_TOPICS]
            if present:
                for described in await admin.describe_topics(present):
                    facts.topics[described["topic"]] = len(described.get("partitions") or [])
            for service, group_id in groups.items():
                facts.groups[group_id] = await _group(admin, bootstrap, group_id, service, facts)
    except Exception as exc:  # any way of not reaching or not understanding the broker
        facts.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        await admin.close()
    return facts


async def _group(admin: AIOKafkaAdminClient, bootstrap: str, group_id: str, service: str,
                 broker: BrokerFacts) -> GroupFacts:
    group = GroupFacts(group_id=group_id)
    described = (await admin.describe_consumer_groups([group_id]))[0].groups[0]
    _, _, group.state, _, _, members = described[:6]
    group.members = len(members)
    # With the partitions named: tansu closes the connection otherwise (docs/broker-notes.md).
    partitions = [TopicPartition(topic, p) for topic in GROUP_TOPICS[service]
                  for p in range(broker.topics.get(topic, 0))]
    if not partitions:
        return group
    committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
    if broker.is_tansu:
        group.lag_unknown_why = "tansu's end offsets are unreliable"
        return group
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="ibflow-doctor", enable_auto_commit=False)
    await reader.start()
    try:
        ends = await reader.end_offsets(partitions)
    finally:
        await reader.stop()
    for tp in partitions:
        offset = committed.get(tp)
        done = offset.offset if offset is not None and offset.offset >= 0 else None
        group.lag[f"{tp.topic}[{tp.partition}]"] = None if done is None else max(ends[tp] - done, 0)
    return group


def expected_partitions(reports: Mapping[str, dict | None], own: int) -> int:
    """KAFKA_TOPIC_PARTITIONS as the services run with it (they create the topics)."""
    for report in reports.values():
        settings = ((report or {}).get("components") or {}).get("settings") or {}
        value = (settings.get("detail") or {}).get("non_default", {}).get("KAFKA_TOPIC_PARTITIONS") \
            if isinstance(settings, dict) else None
        if value and str(value).isdigit():
            return int(value)
    return own


def gather(gateway_url: str, direct: Mapping[str, str], fallback: Mapping[str, str], own_bootstrap: str | None,
           own_partitions: int) -> Facts:
    with httpx.Client() as client:
        reports, errors, asked = ask_services(client, gateway_url, direct, fallback)
    said = reported_bootstrap(reports)
    bootstrap = next(iter(said)) if len(said) == 1 else own_bootstrap or (sorted(said)[0] if said else None)
    broker = asyncio.run(ask_broker(bootstrap, group_ids(reports))) if bootstrap else None
    return Facts(gateway_url=gateway_url, reports=reports, errors=errors, asked=asked, broker=broker,
                 expected_partitions=expected_partitions(reports, own_partitions))


# --- the report -----------------------------------------------------------------------

STATE_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


def print_report(findings: list[Finding], console: Console) -> None:
    print_table(console, ("check", "state", "what was found"),
                [(f.check, f.state, safe(f.found)) for f in findings],
                style=lambda column, cell: STATE_STYLE.get(cell, "") if column == "state" else "")
    wrong = [f for f in findings if f.state != "ok" and f.fix]
    if wrong:
        console.print()
        console.print("To fix:", style="bold", markup=False, highlight=False)
        for finding in wrong:
            console.print(f"  [{finding.state}] {finding.check}: {safe(finding.found)}", markup=False,
                          highlight=False, soft_wrap=True, style=STATE_STYLE[finding.state])
            console.print(f"      {finding.fix}", markup=False, highlight=False, soft_wrap=True)
    failed = sum(f.state == "fail" for f in findings)
    warned = sum(f.state == "warn" for f in findings)
    verdict = "something is wrong" if failed else ("ok, with warnings" if warned else "all ok")
    console.print(f"{verdict}: {failed} failed, {warned} warning(s), {len(findings)} checks",
                  style=STATE_STYLE["fail" if failed else ("warn" if warned else "ok")], markup=False,
                  highlight=False)


def as_json(facts: Facts, findings: list[Finding]) -> str:
    return json.dumps({
        "ok": not any(f.state == "fail" for f in findings),
        "checks": [asdict(f) for f in findings],
        "gateway": facts.gateway_url,
        "asked": facts.asked,
        "services": facts.reports,
        "errors": facts.errors,
        "broker": asdict(facts.broker) if facts.broker else None,
        "expected_partitions": facts.expected_partitions,
    }, indent=2, default=str)


def doctor(gateway_url: str, direct: Mapping[str, str], fallback: Mapping[str, str], own_bootstrap: str | None,
           own_partitions: int, *, json_output: bool, console: Console) -> int:
    facts = gather(gateway_url, direct, fallback, own_bootstrap, own_partitions)
    findings = conclude(facts)
    if json_output:
        console.file.write(as_json(facts, findings) + "\n")
    else:
        print_report(findings, console)
    return EXIT_PROBLEMS if any(f.state == "fail" for f in findings) else EXIT_OK
