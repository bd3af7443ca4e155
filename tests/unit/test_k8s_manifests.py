"""The Kubernetes manifests, checked offline: no cluster, no schema validator installs
here, so their structure is checked against what ibflow really is: its CLI, its
settings, its ports, its topics' partition count, its measured memory.

Both the base and the dev overlay are rendered (tests/kustomize_lite.py; compared with
`kubectl kustomize` where kubectl is installed) and checked alike.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ibflow.cli import build_parser
from ibflow.services import MIGRATIONS, SERVICES
from services.artifacts.settings import ArtifactsSettings
from services.gateway.settings import GatewaySettings
from services.scheduler.settings import SchedulerSettings
from services.signals.settings import SignalsSettings
from tests.kustomize_lite import WORKLOADS, containers, find, pod_spec, read_env_file, render, split_image

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
DEV = K8S / "overlays" / "dev"
SECRET_NAME = "ibflow-secrets"
CONFIG_NAME = "ibflow-config"
# Idle RSS of each service, measured on the dev stack (MB): requests cover it, limits
# leave at least twice as much for the work (a run, an ingest batch, a page).
IDLE_RSS_MB = {"artifacts": 97, "scheduler": 150, "signals": 314, "gateway": 69}
CONSUMERS = ("artifacts", "signals")  # one consumer group each
API_VERSIONS = {
    "Namespace": "v1", "ConfigMap": "v1", "Secret": "v1", "Service": "v1", "ServiceAccount": "v1",
    "PersistentVolumeClaim": "v1", "Deployment": "apps/v1", "StatefulSet": "apps/v1", "Job": "batch/v1",
    "Ingress": "networking.k8s.io/v1", "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
}
SETTINGS = (ArtifactsSettings, SchedulerSettings, SignalsSettings, GatewaySettings)
# Where the image of each stateful container of the dev overlay writes.
DATA_PATH_VARIABLE = {"postgres": "PGDATA", "kafka": "KAFKA_LOG_DIRS"}


def built_images() -> dict[str, set[str]]:
    """image → the dependency groups build-images.sh installs in it (build-arg SERVICE)."""
    script = (K8S / "build-images.sh").read_text()
    assert 'docker build -f deploy/Dockerfile --build-arg "SERVICE=$service"' in script
    table = script.split("<<'IMAGES'\n", 1)[1].split("\nIMAGES", 1)[0]
    return {image: set(groups.split(",")) for image, groups in (line.split() for line in table.splitlines())}


IMAGES = built_images()


@dataclass
class Rendering:
    name: str
    objects: list[dict[str, Any]]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return find(self.objects, kind, name)

    def workloads(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] in WORKLOADS]

    def config(self) -> dict[str, str]:
        return self.get("ConfigMap", CONFIG_NAME)["data"]

    def secret_keys(self) -> set[str]:
        secrets = [s for s in self.of("Secret") if s["metadata"]["name"] == SECRET_NAME]
        if secrets:
            return set(secrets[0]["data"])
        # The base holds no secret: its template says which keys an overlay provides.
        return set(yaml.safe_load((BASE / "secret.example.yaml").read_text())["stringData"])

    def ibflow_containers(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, container) of every container that runs an ibflow image."""
        return [(w, c) for w in self.workloads() for c in containers(w) if image_name(c) in IMAGES]


def image_name(container: dict[str, Any]) -> str:
    return split_image(container["image"])[0].rsplit("/", 1)[-1]


def command(container: dict[str, Any]) -> str:
    return container["args"][0]


@pytest.fixture(scope="module", params=["base", "dev"])
def rendering(request) -> Rendering:
    return Rendering(request.param, render(BASE if request.param == "base" else DEV, env_examples=True))


def quantity(value: str | int) -> float:
    """A Kubernetes quantity in base units: 100m → 0.1, 128Mi → 134217728."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, f"not a quantity: {value!r}"
    return float(match[1]) * units.get(match[2], 1) if match[2] else float(match[1])


def manifest_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


# --- the files ---------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_document_parses_and_names_its_kind(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path} holds no document"
    for document in documents:
        assert document.get("apiVersion") and document.get("kind"), path
        if document["kind"] != "Kustomization":
            assert document["metadata"]["name"], path


@pytest.mark.parametrize("directory", [BASE, DEV], ids=["base", "dev"])
def test_every_file_a_kustomization_names_exists_and_every_manifest_is_named(directory):
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    named = [*kustomization.get("resources", []), *(p["path"] for p in kustomization.get("patches", []))]
    for entry in named:
        assert (directory / entry).exists(), f"{directory.name}: {entry} does not exist"
    for generator in [*kustomization.get("configMapGenerator", []), *kustomization.get("secretGenerator", [])]:
        for env in generator["envs"]:
            # A gitignored file of secrets is not in the repository: its example is.
            assert (directory / env).exists() or (directory / f"{env}.example").exists(), env
    templates = {"kustomization.yaml", "secret.example.yaml"}
    for path in directory.glob("*.yaml"):
        assert path.name in named or path.name in templates, f"{path.name} is not applied by {directory.name}"


def test_the_build_script_builds_what_each_command_needs():
    assert IMAGES["ibflow-migrate"] >= set(MIGRATIONS)
    for name in SERVICES:
        assert IMAGES[f"ibflow-{name}"] == {name}
    groups = {group for groups in IMAGES.values() for group in groups}
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert groups <= set(optional), "build-images.sh installs a group pyproject does not have"


# --- what the rendered objects are -------------------------------------------------


def test_kinds_and_api_versions_are_the_stable_ones(rendering):
    for obj in rendering.objects:
        assert obj["kind"] in API_VERSIONS, f"{rendering.name}: unexpected kind {obj['kind']}"
        assert obj["apiVersion"] == API_VERSIONS[obj["kind"]], f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_service_is_a_deployment_probed_on_its_health(rendering, name):
    deployment = rendering.get("Deployment", name)
    (container,) = [c for c in pod_spec(deployment)["containers"] if command(c) == name]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": SERVICES[name].default_port}
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/health" and readiness["port"] == "http"
    liveness = container["livenessProbe"]
    # Alive = answers HTTP at all, 503 included: an outage is waited out, not restarted.
    script = liveness["exec"]["command"][-1]
    assert f"http://127.0.0.1:{SERVICES[name].default_port}/health" in script and "HTTPError" in script
    assert liveness["timeoutSeconds"] > 8 and container["readinessProbe"]["timeoutSeconds"] >= 6
    service = rendering.get("Service", name)
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(SERVICES[name].default_port, "http")]


def test_ibflow_containers_run_a_cli_command_their_image_has(rendering):
    parser = build_parser()
    ran = set()
    for workload, container in rendering.ibflow_containers():
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        # `command` would replace the image's entrypoint (`ibflow`): only args are given.
        assert "command" not in container, where
        try:
            parser.parse_args(container["args"])
        except SystemExit:
            pytest.fail(f"{where} runs `ibflow {' '.join(container['args'])}`, which the CLI refuses")
        needed = {command(container)} & set(SERVICES) or (set(MIGRATIONS) if command(container) == "migrate" else set())
        assert needed <= IMAGES[image_name(container)], f"{where}: {image_name(container)} lacks {needed}"
        ran.add(command(container))
    assert ran == {*SERVICES, "migrate", "topics"}


def test_every_image_is_pinned(rendering):
    for workload in rendering.workloads():
        for container in containers(workload):
            _, tag = split_image(container["image"])
            assert tag and tag != "latest", f"{workload['metadata']['name']}: {container['image']}"


def test_settings_are_ones_ibflow_reads_and_references_exist(rendering):
    known = {field.upper() for settings in SETTINGS for field in settings.model_fields}
    config = rendering.config()
    assert set(config) <= known, f"settings no service reads: {set(config) - known}"
    secret_keys = rendering.secret_keys()
    for workload in rendering.workloads():
        for container in containers(workload):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] == CONFIG_NAME
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["name"] == SECRET_NAME
                    assert ref["secretKeyRef"]["key"] in secret_keys, variable
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["key"] in config, variable
    secret_settings = {key for key in secret_keys if key in known}
    assert secret_settings == {"DATABASE_URL", "IBFLOW_API_TOKEN"}
    assert not secret_settings & set(config), "a secret among the plain settings"


def test_only_the_containers_that_use_the_database_get_its_url(rendering):
    for workload, container in rendering.ibflow_containers():
        has_url = any(v["name"] == "DATABASE_URL" for v in container.get("env", []))
        assert has_url == (command(container) in {"artifacts", "scheduler", "migrate"}), workload["metadata"]["name"]


def test_every_container_has_requests_within_limits(rendering):
    for workload in rendering.workloads():
        for container in containers(workload):
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                where = f"{workload['metadata']['name']}/{container['name']} {resource}"
                assert request and limit, f"{where}: request and limit needed"
                assert quantity(request) <= quantity(limit), where


@pytest.mark.parametrize("name", list(SERVICES))
def test_memory_follows_the_measured_idle_rss(rendering, name):
    (container,) = pod_spec(rendering.get("Deployment", name))["containers"]
    idle = IDLE_RSS_MB[name] * 1e6
    assert quantity(container["resources"]["requests"]["memory"]) >= idle
    assert quantity(container["resources"]["limits"]["memory"]) >= 2 * idle


def test_consumers_do_not_outnumber_the_partitions(rendering):
    config = rendering.config()
    partitions = int(config["KAFKA_TOPIC_PARTITIONS"])
    for name in CONSUMERS:
        replicas = rendering.get("Deployment", name)["spec"]["replicas"]
        assert 1 <= replicas <= partitions, f"{name}: {replicas} replicas, {partitions} partitions"
    # Each signals replica is one more IBKR API client, with an id of its own.
    signals = rendering.get("Deployment", "signals")["spec"]["replicas"]
    assert signals <= int(config["IBKR_CLIENT_ID_FALLBACKS"]) + 1


def test_only_the_gateway_is_reachable_from_outside(rendering):
    for service in rendering.of("Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]["name"]
    (ingress,) = rendering.of("Ingress")
    backends = {
        (path["backend"]["service"]["name"], path["backend"]["service"]["port"]["name"])
        for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]
    }
    assert backends == {("gateway", "http")}


def test_the_services_that_use_the_database_wait_for_the_one_migration(rendering):
    migrations = [w for w, c in rendering.ibflow_containers() if command(c) == "migrate"]
    assert [w["kind"] for w in migrations] == ["Job"], "one migration, as a Job"
    (job,) = migrations
    # Waiters started after the job ended must still find it complete.
    assert "ttlSecondsAfterFinished" not in job["spec"]
    for name in ("artifacts", "scheduler"):
        spec = pod_spec(rendering.get("Deployment", name))
        (waiter,) = spec["initContainers"]
        assert waiter["args"][:1] == ["wait"] and "--for=condition=complete" in waiter["args"]
        assert f"job/{job['metadata']['name']}" in waiter["args"]
        assert _may_watch_jobs(rendering, spec["serviceAccountName"]), name
    topics = [w for w, c in rendering.ibflow_containers() if command(c) == "topics"]
    assert [w["kind"] for w in topics] == ["Job"]


def _may_watch_jobs(rendering: Rendering, account: str) -> bool:
    rendering.get("ServiceAccount", account)
    for binding in rendering.of("RoleBinding"):
        if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in binding["subjects"]):
            role = rendering.get("Role", binding["roleRef"]["name"])
            for rule in role["rules"]:
                if "batch" in rule["apiGroups"] and "jobs" in rule["resources"]:
                    return {"get", "watch"} <= set(rule["verbs"])
    return False


def test_no_pod_gets_service_links(rendering):
    # A Service named `artifacts` would set ARTIFACTS_PORT=tcp://...: ibflow reads it as a port.
    for workload in rendering.workloads():
        assert pod_spec(workload).get("enableServiceLinks") is False, workload["metadata"]["name"]


def test_the_artifact_store_is_one_claim_mounted_where_its_url_points(rendering):
    path = urlsplit(rendering.config()["ARTIFACT_STORE_URL"]).path
    claims = {}
    for name in ("artifacts", "signals"):
        spec = pod_spec(rendering.get("Deployment", name))
        (container,) = spec["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == path]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        claims[name] = volume["persistentVolumeClaim"]["claimName"]
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"], name
    assert len(set(claims.values())) == 1, claims
    rendering.get("PersistentVolumeClaim", claims["artifacts"])


# --- secrets -----------------------------------------------------------------------


def test_the_base_holds_no_secret_only_a_template_of_placeholders():
    assert not [o for o in render(BASE) if o["kind"] == "Secret"]
    template = yaml.safe_load((BASE / "secret.example.yaml").read_text())
    assert template["metadata"]["name"] == SECRET_NAME
    for key, value in template["stringData"].items():
        assert "REPLACE" in value, f"{key} in secret.example.yaml is not a placeholder"


def test_the_dev_secrets_come_from_a_gitignored_file_with_no_value():
    kustomization = yaml.safe_load((DEV / "kustomization.yaml").read_text())
    (generator,) = kustomization["secretGenerator"]
    assert generator["envs"] == [".env"]
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()
    for key, value in read_env_file(DEV / ".env.example").items():
        password = urlsplit(value).password if "://" in value else None
        assert value == "" or (password or "").startswith("<"), f"{key} has a value in .env.example"


# --- the dev overlay's own stateful containers ---------------------------------------


@pytest.mark.parametrize("name", sorted(DATA_PATH_VARIABLE))
def test_dev_stateful_containers_write_inside_their_volume(name):
    statefulset = find(render(DEV, env_examples=True), "StatefulSet", name)
    (container,) = pod_spec(statefulset)["containers"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    written = Path(env[DATA_PATH_VARIABLE[name]])
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = [Path(m["mountPath"]) for m in container["volumeMounts"] if m["name"] in claims]
    assert any(written == mount or mount in written.parents for mount in mounts), f"{name} writes to {written}"


# --- the same as kustomize itself --------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its kustomize) is not installed")
@pytest.mark.parametrize("overlay", ["base", "overlays/dev"])
def test_kubectl_kustomize_renders_the_same_objects(tmp_path, overlay):
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    shutil.copy(tree / "overlays" / "dev" / ".env.example", tree / "overlays" / "dev" / ".env")
    built = subprocess.run(["kubectl", "kustomize", str(tree / overlay)], capture_output=True, text=True,
                           timeout=120, check=True).stdout
    theirs = {_key(o): _base64_unwrapped(o) for o in _without_hashes(list(yaml.safe_load_all(built)))}
    ours = {_key(o): o for o in render(tree / overlay)}
    assert theirs.keys() == ours.keys()
    for key, obj in ours.items():
        assert theirs[key] == obj, key


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _without_hashes(value: Any) -> Any:
    """kustomize's generated names (`ibflow-config-<hash>`) as plain names."""
    if isinstance(value, dict):
        return {k: _without_hashes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_hashes(v) for v in value]
    if isinstance(value, str):
        return re.sub(rf"^({CONFIG_NAME}|{SECRET_NAME})-[a-z0-9]{{10}}$", r"\1", value)
    return value


def _base64_unwrapped(obj: dict[str, Any]) -> dict[str, Any]:
    """kubectl folds long base64 values over lines."""
    if obj["kind"] == "Secret":
        obj["data"] = {key: "".join(value.split()) for key, value in obj["data"].items()}
    return obj


def test_the_secret_data_is_base64_like_kustomize_makes_it():
    secret = find(render(DEV, env_examples=True), "Secret", SECRET_NAME)
    for value in secret["data"].values():
        base64.b64decode(value, validate=True)
