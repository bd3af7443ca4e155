"""What `ibflow doctor` concludes from what the services and the broker said: one finding
per check, `ok`, `warn` or `fail`, with what was found and, when something is wrong,
the fix in words. Pure: the facts come from `ibflow.doctor`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shared.topics import ALL_TOPICS

State = Literal["ok", "warn", "fail"]
STATEFUL = ("artifacts", "scheduler")
SERVICES = ("artifacts", "scheduler", "signals")
# The consumer groups ibflow runs, by the service that owns each (its default id).
GROUPS = {"artifacts": "ibflow-artifacts", "signals": "ibflow-signals", "scheduler": "ibflow-scheduler"}


@dataclass(frozen=True)
class Finding:
    check: str
    state: State
    found: str
    fix: str | None = None


@dataclass
class GroupFacts:
    group_id: str
    state: str | None = None
    members: int | None = None
    # partition -> lag; None where it cannot be known
    lag: dict[str, int | None] = field(default_factory=dict)
    lag_unknown_why: str | None = None
    error: str | None = None


@dataclass
class BrokerFacts:
    bootstrap: str
    error: str | None = None
    cluster_id: str | None = None
    # topic -> partition count
    topics: dict[str, int] = field(default_factory=dict)
    groups: dict[str, GroupFacts] = field(default_factory=dict)

    @property
    def is_tansu(self) -> bool:
        return bool(self.cluster_id and self.cluster_id.startswith("tansu"))


@dataclass
class Facts:
    gateway_url: str
    # service -> its own /health report (JSON), or None when it did not answer
    reports: dict[str, dict[str, Any] | None]
    # service -> why it did not answer, and where it was asked
    errors: dict[str, str]
    asked: dict[str, str]
    broker: BrokerFacts | None
    expected_partitions: int


def _component(facts: Facts, service: str, name: str) -> dict[str, Any]:
    report = facts.reports.get(service) or {}
    component = (report.get("components") or {}).get(name)
    return component if isinstance(component, dict) else {}


def _detail(facts: Facts, service: str, name: str) -> dict[str, Any]:
    detail = _component(facts, service, name).get("detail")
    return detail if isinstance(detail, dict) else {}


def services(facts: Facts) -> list[Finding]:
    findings = []
    for name in (*SERVICES, "gateway"):
        report = facts.reports.get(name)
        where = facts.asked.get(name, "")
        if report is None:
            option = "--gateway URL" if name == "gateway" else f"--service-urls {name}=URL"
            findings.append(Finding(f"service {name}", "fail", f"not answering at {where}: {facts.errors.get(name)}",
                                    f"start the {name} service, or point doctor at it with {option}"))
            continue
        status = report.get("status", "?")
        troubles = [f"{component}: {c.get('error') or c.get('status')}"
                    for component, c in (report.get("components") or {}).items()
                    if isinstance(c, dict) and c.get("status") not in ("ok", None)]
        found = f"{status} ({where})" + (f": {'; '.join(troubles)}" if troubles else "")
        state: State = {"ok": "ok", "degraded": "warn", "starting": "warn"}.get(status, "fail")
        fix = None if state == "ok" else f"see the {name} service's log; the components above say what is wrong"
        findings.append(Finding(f"service {name}", state, found, fix))
    return findings


def _where(database: dict[str, Any]) -> str:
    server = database.get("server") if isinstance(database.get("server"), dict) else {}
    said = f"{database.get('host')}:{database.get('port')}/{database.get('database')} as {database.get('user')}"
    if server:
        said += (f" (server: {server.get('address') or 'local socket'}:{server.get('port')}/"
                 f"{server.get('database')} as {server.get('user')}")
        said += f", cluster {server['system_identifier']})" if server.get("system_identifier") else ")"
    return said


def _place(database: dict[str, Any], by_server: bool) -> tuple:
    server = database.get("server") if isinstance(database.get("server"), dict) else {}
    if by_server:
        return (server.get("system_identifier"), server.get("database"))
    return (database.get("host"), database.get("port"), database.get("database"))


def databases(facts: Facts) -> list[Finding]:
    seen = {name: _detail(facts, name, "database") for name in STATEFUL if _detail(facts, name, "database")}
    findings = [Finding(f"database of {name}", "ok", _where(detail)) for name, detail in seen.items()]
    if len(seen) < 2:
        missing = [name for name in STATEFUL if name not in seen]
        return findings + [Finding("databases agree", "warn", f"cannot tell: no database report from "
                                                              f"{', '.join(missing)}")]
    by_server = all((d.get("server") or {}).get("system_identifier") for d in seen.values())
    places = {name: _place(detail, by_server) for name, detail in seen.items()}
    if len(set(places.values())) > 1:
        findings.append(Finding(
            "databases agree", "fail",
            "scheduler and artifacts use different databases: "
            + "; ".join(f"{name} → {_where(detail)}" for name, detail in seen.items()),
            "give both services the same DATABASE_URL and restart them (`ibflow config` shows the tools' own)"))
    else:
        users = {detail.get("user") for detail in seen.values()}
        note = f", as different users ({', '.join(sorted(map(str, users)))})" if len(users) > 1 else ""
        findings.append(Finding("databases agree", "warn" if note else "ok",
                                "artifacts and scheduler use the same database" + note,
                                "one DATABASE_URL for both is the usual set-up" if note else None))
    return findings


def schemas(facts: Facts) -> list[Finding]:
    findings = []
    for name in STATEFUL:
        detail = _detail(facts, name, "database")
        if not detail:
            continue
        revision, head = detail.get("revision"), detail.get("head")
        if "revision" not in detail:
            findings.append(Finding(f"schema of {name}", "fail", "unknown: the database did not answer",
                                    "see the database check above"))
        elif revision == head:
            findings.append(Finding(f"schema of {name}", "ok", f"at head {head}"))
        else:
            findings.append(Finding(
                f"schema of {name}", "fail", f"at {revision or '<none>'}, its code needs {head}",
                "run `ibflow migrate` with the same code as the service (or `ibflow migrate --to "
                f"{head} --service {name}` with a newer release's code)"))
    return findings


def brokers(facts: Facts) -> list[Finding]:
    said = {name: _detail(facts, name, "broker").get("bootstrap_servers")
            for name in (*SERVICES, "gateway") if _detail(facts, name, "broker").get("bootstrap_servers")}
    findings = []
    if len(set(said.values())) > 1:
        findings.append(Finding("broker", "fail", "services use different brokers: "
                                + ", ".join(f"{name} → {servers}" for name, servers in said.items()),
                                "give every service the same KAFKA_BOOTSTRAP_SERVERS and restart them"))
    elif said:
        findings.append(Finding("broker", "ok", f"every service uses {next(iter(said.values()))}"))
    broker = facts.broker
    if broker is None:
        return findings
    if broker.error:
        return findings + [Finding("broker from here", "warn",
                                   f"cannot reach {broker.bootstrap} from this machine: {broker.error}",
                                   "run doctor where the broker is reachable, or set KAFKA_BOOTSTRAP_SERVERS "
                                   "for it; topics and consumer groups are not checked")]
    kind = "tansu" if broker.is_tansu else "Kafka"
    findings.append(Finding("broker from here", "ok", f"{broker.bootstrap} answers ({kind}, cluster "
                                                      f"{broker.cluster_id})"))
    return findings + topics(facts, broker) + groups(broker)


def topics(facts: Facts, broker: BrokerFacts) -> list[Finding]:
    findings = []
    expected = facts.expected_partitions
    for topic in ALL_TOPICS:
        count = broker.topics.get(topic)
        if count is None:
            findings.append(Finding(f"topic {topic}", "fail", "missing",
                                    "`ibflow topics` creates it (the services also create missing topics "
                                    "at start-up)"))
        elif count < expected:
            findings.append(Finding(f"topic {topic}", "warn", f"{count} partitions, KAFKA_TOPIC_PARTITIONS is "
                                                              f"{expected}",
                                    f"at most {count} consumers of a group share the work; adding partitions "
                                    "is a Kafka operation, best done between runs"))
        else:
            findings.append(Finding(f"topic {topic}", "ok", f"{count} partitions (expected {expected})"))
    return findings


def groups(broker: BrokerFacts) -> list[Finding]:
    findings = []
    for service, group_id in GROUPS.items():
        group = broker.groups.get(group_id)
        if group is None:
            continue
        name = f"consumer group {group_id}"
        if group.error:
            findings.append(Finding(name, "warn", f"cannot tell: {group.error}"))
            continue
        members = f"{group.members} member(s)" if group.members is not None else "members unknown"
        if group.lag_unknown_why:
            lag = f"lag unknown on this broker ({group.lag_unknown_why})"
        elif group.lag:
            known = [v for v in group.lag.values() if v is not None]
            lag = f"lag {sum(known)} record(s)" + (" (some partitions never committed)"
                                                   if len(known) < len(group.lag) else "")
        else:
            lag = "nothing committed yet"
        found = f"{group.state or 'unknown state'}, {members}, {lag}"
        if not group.members:
            findings.append(Finding(name, "warn", found, f"the {service} service consumes in this group: is it "
                                                         "running?"))
        else:
            findings.append(Finding(name, "ok", found))
    return findings


def ibkr(facts: Facts) -> list[Finding]:
    if facts.reports.get("signals") is None:
        return []
    detail = _detail(facts, "signals", "ibkr")
    component = _component(facts, "signals", "ibkr")
    state = detail.get("state", "unknown")
    where = f" at {detail['endpoint']}" if detail.get("endpoint") else ""
    if component.get("status") == "ok":
        return [Finding("IBKR", "ok", f"{state}{where} ({detail.get('provider', '?')})")]
    return [Finding("IBKR", "warn", f"{state}{where}: {component.get('error') or 'not connected'}",
                    "check IBKR_HOST / IBKR_PORT and that TWS or IB Gateway runs with its API enabled "
                    "(README: Interactive Brokers); runs go on without market data meanwhile")]


def artifact_store(facts: Facts) -> list[Finding]:
    writer, reader = _detail(facts, "signals", "artifact_store"), _detail(facts, "artifacts", "artifact_store")
    findings = []
    for name, detail, role in (("signals", writer, "writes"), ("artifacts", reader, "reads")):
        if not detail:
            continue
        url = detail.get("url", "?")
        if detail.get("writable") is False or detail.get("reachable") is False:
            state: State = "fail" if name == "signals" else "warn"
            why = detail.get("error") or "not writable"
            fix = (f"let the {name} service write to {url} (folder permissions, bucket credentials)"
                   + ("" if name == "signals" else "; retention cannot collect blobs meanwhile"))
            findings.append(Finding(f"artifact store of {name}", state, f"{url} ({role}): {why}", fix))
        else:
            findings.append(Finding(f"artifact store of {name}", "ok", f"{url} ({role}), writable"))
    if writer.get("url") and reader.get("url") and writer["url"] != reader["url"]:
        findings.append(Finding("artifact stores agree", "fail",
                                f"signals writes to {writer['url']}, artifacts reads from {reader['url']}",
                                "give both services the same ARTIFACT_STORE_URL (and the same volume) and "
                                "restart them"))
    return findings


def auth(facts: Facts) -> list[Finding]:
    said = {name: _detail(facts, name, "settings").get("auth") for name in ("gateway", "scheduler")}
    said = {name: value for name, value in said.items() if value}
    if not said:
        return []
    found = ", ".join(f"{name}: {value}" for name, value in said.items())
    if len(set(said.values())) > 1:
        return [Finding("API token", "warn", f"token {found}",
                        "set the same IBFLOW_API_TOKEN on the gateway and the scheduler")]
    state = next(iter(said.values()))
    return [Finding("API token", "ok", f"token {state}" + ("" if state == "on" else
                                                          " (anyone who reaches the gateway can trigger runs)"))]


def settings(facts: Facts) -> list[Finding]:
    findings = []
    for name in (*SERVICES, "gateway"):
        differing = _detail(facts, name, "settings").get("non_default")
        if isinstance(differing, dict):
            shown = ", ".join(f"{key}={value}" for key, value in differing.items()) or "all defaults"
            findings.append(Finding(f"settings of {name}", "ok", shown))
    return findings


def conclude(facts: Facts) -> list[Finding]:
    return [*services(facts), *databases(facts), *schemas(facts), *brokers(facts), *ibkr(facts),
            *artifact_store(facts), *auth(facts), *settings(facts)]
