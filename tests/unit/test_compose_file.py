"""No Docker engine runs here: check the compose stack's shape and that it runs our code."""

from pathlib import Path

import pytest
import yaml

from ibflow.cli import subcommands

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
APP_SERVICES = ("artifacts", "scheduler", "signals", "gateway")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_the_production_shaped_services_are_there(compose):
    assert {"postgres", "kafka", "migrate", *APP_SERVICES, "ib-gateway"} <= set(compose["services"])


def test_kafka_runs_in_kraft_mode_without_auto_created_topics(compose):
    env = compose["services"]["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


@pytest.mark.parametrize("name", ["postgres", "kafka", *APP_SERVICES])
def test_long_running_services_have_healthchecks(compose, name):
    assert compose["services"][name]["healthcheck"]["test"]


def test_migration_is_one_shot_and_waits_for_a_healthy_database(compose):
    migrate = compose["services"]["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", APP_SERVICES[:3])
def test_services_wait_for_the_migration_and_the_broker(compose, name):
    deps = compose["services"][name]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["kafka"]["condition"] == "service_healthy"


def test_every_command_exists_in_the_cli(compose):
    known = subcommands()
    for name, service in compose["services"].items():
        if "command" in service:
            assert service["command"][0] in known, f"{name} runs unknown command {service['command']}"


def test_services_are_built_from_deploy_with_their_dependency_group(compose):
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert 'pip install ".[${SERVICE}]"' in dockerfile
    for name in APP_SERVICES:
        build = compose["services"][name]["build"]
        assert build["dockerfile"] == "deploy/Dockerfile" and build["args"]["SERVICE"] == name


def test_the_ib_gateway_container_is_behind_a_profile(compose):
    assert compose["services"]["ib-gateway"]["profiles"] == ["ibgateway"]
