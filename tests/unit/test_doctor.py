"""`ibflow doctor`'s conclusions from what the services and the broker said, what the
services say about their own settings, and the gateway's `/health?full=true`."""

from __future__ import annotations

import copy
import io

import httpx
import pytest
from pydantic import SecretStr
from rich.console import Console

from ibflow import doctor
from ibflow.doctor_checks import BrokerFacts, Facts, GroupFacts, conclude
from services.gateway import health as gateway_health
from services.gateway.main import create_app
from services.gateway.settings import GatewaySettings
from services.scheduler.settings import SchedulerSettings
from shared.health import ComponentHealth
from shared.settings_report import masked, non_default_settings, settings_component
from shared.topics import ALL_TOPICS

pytestmark = pytest.mark.unit
SERVER = {"database": "ibflow", "user": "ibflow", "address": "10.0.0.5", "port": 5432, "system_identifier": "7714"}


def component(status="ok", error=None, **detail) -> dict:
    return {"status": status, "detail": detail, "error": error}


def database(**changes) -> dict:
    detail = {"host": "db", "port": 5432, "database": "ibflow", "user": "ibflow",
              "url": "postgresql+asyncpg://ibflow:***@db:5432/ibflow", "revision": "r5", "head": "r5",
              "server": dict(SERVER)}
    return component(**(detail | changes))


def healthy() -> dict[str, dict]:
    broker = component(bootstrap_servers="kafka:9092")
    settings = component(auth="on", non_default={"KAFKA_TOPIC_PARTITIONS": "6"})
    store = component(url="file:///data/store", backend="file", writable=True)
    return {
        "artifacts": {"status": "ok", "service": "artifacts", "components": {"database": database(), "broker": broker, "artifact_store": store,
                                                     "settings": settings}},
        "scheduler": {"status": "ok", "service": "scheduler", "components": {"database": database(head="s2", revision="s2"),
                                                     "broker": broker, "settings": settings}},
        "signals": {"status": "ok", "service": "signals", "components": {"ibkr": component(state="connected", endpoint="ib:4002",
                                                                     provider="ibkr"),
                                                   "broker": broker, "artifact_store": store, "settings": settings}},
        "gateway": {"status": "ok", "service": "gateway", "components": {"broker": broker, "settings": settings}},
    }


def facts(reports=None, broker=None, partitions=6) -> Facts:
    reports = healthy() if reports is None else reports
    if broker is None:
        broker = BrokerFacts(bootstrap="kafka:9092", cluster_id="Xy12", topics={t: 6 for t in ALL_TOPICS}, groups={
            "ibflow-artifacts": GroupFacts("ibflow-artifacts", "Stable", 2, {"ibflow.logs[0]": 3, "ibflow.logs[1]": 0})})
    return Facts(gateway_url="http://gw", reports=reports, errors={name: "refused" for name, r in reports.items()
                                                                    if r is None},
                 asked={name: f"http://{name}" for name in reports}, broker=broker, expected_partitions=partitions)


def by_check(findings) -> dict:
    return {f.check: f for f in findings}


def test_a_healthy_system_has_nothing_to_fix():
    findings = conclude(facts())
    assert [f for f in findings if f.state != "ok"] == []
    found = by_check(findings)
    assert found["consumer group ibflow-artifacts"].found == "Stable, 2 member(s), lag 3 record(s)"
    assert found["database of artifacts"].found == (
        "db:5432/ibflow as ibflow (server: 10.0.0.5:5432/ibflow as ibflow, cluster 7714)")
    assert found["settings of gateway"].found == "KAFKA_TOPIC_PARTITIONS=6"


def test_services_on_different_databases_fail_with_the_fix_in_words():
    reports = healthy()
    reports["scheduler"]["components"]["database"] = database(database="ibflow_other", revision="s2", head="s2",
                                                              server=SERVER | {"database": "ibflow_other"})
    finding = by_check(conclude(facts(reports)))["databases agree"]
    assert finding.state == "fail"
    assert finding.found.startswith("scheduler and artifacts use different databases: ")
    assert "same DATABASE_URL" in finding.fix


def test_two_names_of_one_server_are_one_database_when_the_server_says_so():
    reports = healthy()
    reports["scheduler"]["components"]["database"] = database(host="127.0.0.1", revision="s2", head="s2")
    reports["artifacts"]["components"]["database"] = database(host="localhost")
    assert by_check(conclude(facts(reports)))["databases agree"].state == "ok"
    # Without the server's word, the URLs decide.
    for name in ("artifacts", "scheduler"):
        reports[name]["components"]["database"]["detail"].pop("server")
    assert by_check(conclude(facts(reports)))["databases agree"].state == "fail"


def test_a_schema_behind_its_code_fails_and_says_to_migrate():
    reports = healthy()
    reports["artifacts"]["components"]["database"] = database(revision="r3", status="unhealthy")
    finding = by_check(conclude(facts(reports)))["schema of artifacts"]
    assert (finding.state, finding.found) == ("fail", "at r3, its code needs r5")
    assert "ibflow migrate" in finding.fix


def test_missing_topics_and_too_few_partitions():
    broker = BrokerFacts(bootstrap="kafka:9092", cluster_id="c", topics={t: 6 for t in ALL_TOPICS if t != "ibflow.logs"}
                         | {"ibflow.artifacts": 2})
    found = by_check(conclude(facts(broker=broker)))
    assert found["topic ibflow.logs"].state == "fail" and "ibflow topics" in found["topic ibflow.logs"].fix
    assert found["topic ibflow.artifacts"].state == "warn"
    assert found["topic ibflow.artifacts"].found == "2 partitions, KAFKA_TOPIC_PARTITIONS is 6"


def test_lag_is_unknown_on_tansu_rather_than_a_wrong_number():
    broker = BrokerFacts(bootstrap="k", cluster_id="tansu_cluster", topics={t: 3 for t in ALL_TOPICS}, groups={
        "ibflow-signals": GroupFacts("ibflow-signals", "Stable", 1, lag_unknown_why="tansu's end offsets are "
                                                                               "unreliable")})
    finding = by_check(conclude(facts(broker=broker, partitions=3)))["consumer group ibflow-signals"]
    assert finding.found == "Stable, 1 member(s), lag unknown on this broker (tansu's end offsets are unreliable)"


def test_a_group_without_members_is_a_warning_naming_its_service():
    broker = BrokerFacts(bootstrap="k", cluster_id="c", topics={t: 6 for t in ALL_TOPICS},
                         groups={"ibflow-scheduler": GroupFacts("ibflow-scheduler", "Empty", 0)})
    finding = by_check(conclude(facts(broker=broker)))["consumer group ibflow-scheduler"]
    assert finding.state == "warn" and "scheduler service" in finding.fix


def test_different_brokers_and_artifact_stores_fail():
    reports = healthy()
    reports["signals"]["components"]["broker"] = component(bootstrap_servers="other:9092")
    reports["signals"]["components"]["artifact_store"] = component(url="file:///elsewhere", writable=True)
    found = by_check(conclude(facts(reports)))
    assert found["broker"].state == "fail" and "signals → other:9092" in found["broker"].found
    assert found["artifact stores agree"].state == "fail"
    assert found["artifact stores agree"].found == "signals writes to file:///elsewhere, artifacts reads from " \
                                                   "file:///data/store"


def test_a_store_signals_cannot_write_fails():
    reports = healthy()
    reports["signals"]["components"]["artifact_store"] = component(url="file:///ro", writable=False)
    reports["artifacts"]["components"]["artifact_store"] = component(url="file:///ro", writable=False)
    found = by_check(conclude(facts(reports)))
    assert found["artifact store of signals"].state == "fail"
    assert found["artifact store of artifacts"].state == "warn"


def test_a_silent_service_fails_and_ibkr_trouble_is_a_warning():
    reports = healthy()
    reports["scheduler"] = None
    reports["signals"]["components"]["ibkr"] = component("degraded", "connect refused", state="disconnected",
                                                         endpoint="ib:4002")
    found = by_check(conclude(facts(reports)))
    assert found["service scheduler"].state == "fail"
    assert found["service scheduler"].found == "not answering at http://scheduler: refused"
    assert found["IBKR"].state == "warn" and "IBKR_HOST" in found["IBKR"].fix
    assert found["databases agree"].state == "warn"


def test_token_on_at_the_gateway_but_off_at_the_scheduler_is_a_warning():
    reports = healthy()
    reports["scheduler"]["components"]["settings"] = component(auth="off", non_default={})
    assert by_check(conclude(facts(reports)))["API token"].state == "warn"


def test_an_unreachable_broker_is_a_warning_and_skips_topics():
    found = by_check(conclude(facts(broker=BrokerFacts(bootstrap="kafka:9092", error="KafkaConnectionError"))))
    assert found["broker from here"].state == "warn"
    assert not any(check.startswith("topic ") for check in found)


def test_the_report_lists_fixes_and_the_verdict():
    reports = healthy()
    reports["artifacts"]["components"]["database"] = database(revision="r3")
    findings = conclude(facts(reports))
    out = io.StringIO()
    doctor.print_report(findings, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "To fix:\n  [fail] schema of artifacts: at r3, its code needs r5\n" in text
    assert text.rstrip().endswith(f"something is wrong: 1 failed, 0 warning(s), {len(findings)} checks")


def test_service_urls_are_parsed_and_refused_in_words():
    assert doctor.parse_service_urls("scheduler=http://s:8002/, artifacts=https://a") == {
        "scheduler": "http://s:8002", "artifacts": "https://a"}
    for bad in ("scheduler", "nope=http://x", "scheduler=ftp://x"):
        with pytest.raises(doctor.DoctorError, match="NAME=http"):
            doctor.parse_service_urls(bad)


def test_services_are_asked_through_the_gateway_and_directly_when_told():
    reports = healthy()
    system = {"status": "ok", "components": {
        "broker": reports["gateway"]["components"]["broker"],
        "gateway": reports["gateway"]["components"]["settings"],
        "artifacts": component(url="http://a:8001", report=reports["artifacts"]),
        "scheduler": component("unhealthy", "not answering (ConnectError)", url="http://s:8002"),
        "signals": component(url="http://g:8003", report=reports["signals"]),
    }}
    direct_scheduler = copy.deepcopy(reports["scheduler"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "gw":
            assert request.url.params["full"] == "true"
            return httpx.Response(200, json=system)
        assert request.url.host == "direct"
        return httpx.Response(503, json=direct_scheduler)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        got, errors, asked = doctor.ask_services(client, "http://gw", {}, {})
        assert got["scheduler"] is None and errors["scheduler"] == "not answering (ConnectError)"
        assert asked["artifacts"] == "http://a:8001 via the gateway"
        assert got["gateway"]["components"]["settings"]["detail"]["auth"] == "on"
        got, errors, asked = doctor.ask_services(client, "http://gw", {"scheduler": "http://direct"}, {})
        assert got["scheduler"] == direct_scheduler and asked["scheduler"] == "http://direct"


def test_a_service_reports_the_settings_that_differ_from_their_defaults_masked():
    settings = SchedulerSettings(database_url="postgresql://me:hunter2@db/ibflow", ibflow_api_token="t0ken",
                                 kafka_enable_idempotence=False, retention_scheduler_days=90)
    shown = settings_component(settings)
    assert shown.detail["auth"] == "on"
    assert shown.detail["non_default"] == {
        "DATABASE_URL": "postgresql://me:***@db/ibflow", "IBFLOW_API_TOKEN": "***",
        "KAFKA_ENABLE_IDEMPOTENCE": "false", "RETENTION_SCHEDULER_DAYS": "90"}
    assert "hunter2" not in str(shown) and "t0ken" not in str(shown)
    assert non_default_settings(SchedulerSettings(database_url="postgresql://db/x")) == {
        "DATABASE_URL": "postgresql://db/x"}
    assert masked(SecretStr("plain-secret")) == "***"


async def test_the_gateway_adds_each_services_report_and_its_own_settings_when_asked(monkeypatch):
    reports = healthy()

    async def broker_probe(settings, timeout):
        return ComponentHealth(status="ok", detail={"bootstrap_servers": "kafka:9092"})

    def handler(request: httpx.Request) -> httpx.Response:
        name = {"a": "artifacts", "s": "scheduler", "g": "signals"}[request.url.host]
        body = copy.deepcopy(reports[name])
        if name == "artifacts":
            body["components"]["database"]["detail"]["url"] = "postgresql://ibflow:s3cret@db/ibflow"
        return httpx.Response(200, json=body)

    monkeypatch.setattr(gateway_health, "probe_broker", broker_probe)
    app = create_app(GatewaySettings(artifacts_url="http://a", scheduler_url="http://s", signals_url="http://g",
                                     ibflow_api_token="tok"), transport=httpx.MockTransport(handler))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            plain = (await client.get("/health")).json()
            full = (await client.get("/health", params={"full": "true"})).json()
    assert "report" not in plain["components"]["artifacts"]["detail"] and "gateway" not in plain["components"]
    report = full["components"]["artifacts"]["detail"]["report"]
    assert report["components"]["database"]["detail"]["url"] == "postgresql://ibflow:***@db/ibflow"
    assert full["components"]["gateway"]["detail"]["auth"] == "on"
    assert "s3cret" not in str(full) and "tok" not in str(full["components"]["gateway"])
