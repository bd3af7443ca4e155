"""No Docker engine runs here: check the compose stack's shape and that it runs our code."""

import re
from pathlib import Path
from urllib.parse import urlsplit

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


# Where each stateful image writes, read from the service's environment: a named volume
# mounted anywhere else keeps nothing, and the loss shows only after `down` and `up`.
def _written_path(name: str, service: dict) -> str | None:
    env = service.get("environment") or {}
    image = service.get("image", "")
    if image.startswith("apache/kafka"):
        return env.get("KAFKA_LOG_DIRS")  # the image's default is not its volume
    if image.startswith("postgres"):
        return env.get("PGDATA")  # explicit: the default moved in postgres 18
    url = env.get("ARTIFACT_STORE_URL", "")
    return urlsplit(url).path if url.startswith("file://") else None


def _named_mounts(compose: dict) -> list[tuple[str, str, str]]:
    """(service, volume, path) of every named-volume mount."""
    mounts = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, _, rest = volume.partition(":")
            if source in (compose.get("volumes") or {}):
                mounts.append((name, source, rest.split(":")[0]))
    return mounts


def test_every_named_volume_is_mounted_where_its_image_writes(compose):
    mounts = _named_mounts(compose)
    assert {volume for _, volume, _ in mounts} == set(compose["volumes"]), "a named volume nobody mounts"
    for name, volume, path in mounts:
        written = _written_path(name, compose["services"][name])
        assert written is not None, f"{name} mounts {volume} at {path} but does not say where it writes"
        assert written.rstrip("/") == path.rstrip("/"), f"{name} writes to {written}, volume {volume} is at {path}"


def test_kafka_keeps_its_log_in_the_volume(compose):
    kafka = compose["services"]["kafka"]
    assert kafka["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert "kafka-data:/var/lib/kafka/data" in kafka["volumes"]


def test_the_artifact_store_is_one_volume_shared_by_its_writer_and_its_reader(compose):
    users = {name for name, volume, _ in _named_mounts(compose) if volume == "artifact-store"}
    assert users == {"signals", "artifacts"}
    # The image creates the folder for its user: a new named volume copies that owner.
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "mkdir -p /data/artifact-store && chown ibflow /data/artifact-store" in dockerfile


SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)


def test_the_database_password_has_no_default():
    text = (REPO / "docker-compose.yml").read_text()
    uses = re.findall(r"\$\{POSTGRES_PASSWORD([^}]*)\}", text)
    assert uses, "POSTGRES_PASSWORD is not used"
    assert all(use.startswith(":?") for use in uses), f"POSTGRES_PASSWORD with a default or none required: {uses}"


def test_no_secret_has_a_default_in_compose():
    text = (REPO / "docker-compose.yml").read_text()
    for name, default in re.findall(r"\$\{(\w+):?-([^}]*)\}", text):
        if SECRET_NAME.search(name):
            assert default == "", f"{name} defaults to {default!r}"


def test_only_the_services_that_use_the_database_get_its_url(compose):
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        has_url = "DATABASE_URL" in env
        assert has_url == (name in ("migrate", "artifacts", "scheduler")), name


def test_env_example_holds_no_secret():
    for number, line in enumerate((REPO / ".env.example").read_text().splitlines(), 1):
        assignment = line.lstrip("# ").strip()
        name, equals, value = assignment.partition("=")
        if equals and SECRET_NAME.search(name) and not line.startswith("#"):
            assert value == "", f".env.example:{number} sets {name}"
        password = urlsplit(value).password if "://" in value else None
        assert password is None or password.startswith("<"), f".env.example:{number} has a password in a URL"
