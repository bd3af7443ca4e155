"""Just enough of kustomize to check deploy/k8s where no kustomize is installed.

It knows the fields the manifests use and refuses any other, so a manifest that starts
to use one fails the checks instead of being checked as something it is not.
Generated ConfigMaps and Secrets keep their plain names (kustomize appends a hash);
tests/unit/test_k8s_manifests.py compares the two renderings where kubectl is installed.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FIELDS = frozenset({
    "apiVersion", "kind", "namespace", "resources", "configMapGenerator", "secretGenerator",
    "images", "replicas", "patches",
})
GENERATOR_FIELDS = frozenset({"name", "envs", "behavior"})
PATCH_FIELDS = frozenset({"path"})
CLUSTER_SCOPED = frozenset({"Namespace"})
WORKLOADS = frozenset({"Deployment", "StatefulSet", "Job"})


class UnsupportedKustomization(Exception):
    """The kustomization uses something this renderer does not implement."""


def render(directory: Path, *, env_examples: bool = False) -> list[dict[str, Any]]:
    """The objects `kustomize build directory` makes, generated names without hash.

    `env_examples`: a generator's env file that does not exist (a gitignored `.env`) is
    read from the `.example` beside it."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    _refuse_unknown("kustomization", kustomization, KUSTOMIZATION_FIELDS)
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects.extend(render(path, env_examples=env_examples))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for kind, field in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for generator in kustomization.get(field, []):
            _generate(objects, kind, generator, directory, env_examples)
    for patch in kustomization.get("patches", []):
        _refuse_unknown("patch", patch, PATCH_FIELDS)
        document = yaml.safe_load((directory / patch["path"]).read_text())
        _merge(find(objects, document["kind"], document["metadata"]["name"]), document)
    for image in kustomization.get("images", []):
        _set_image(objects, image)
    for replicas in kustomization.get("replicas", []):
        workload = next(o for o in objects if o["kind"] in WORKLOADS and o["metadata"]["name"] == replicas["name"])
        workload["spec"]["replicas"] = replicas["count"]
    if "namespace" in kustomization:
        _set_namespace(objects, kustomization["namespace"])
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(matches) != 1:
        raise LookupError(f"{len(matches)} objects {kind}/{name}")
    return matches[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def split_image(image: str) -> tuple[str, str | None]:
    """`registry:5000/name:tag` → (`registry:5000/name`, `tag`)."""
    name, colon, tag = image.rpartition(":")
    if not colon or "/" in tag:
        return image, None
    return name, tag


def read_env_file(path: Path) -> dict[str, str]:
    data = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            data[key] = value
    return data


def _refuse_unknown(what: str, entry: dict[str, Any], known: frozenset[str]) -> None:
    unknown = set(entry) - known
    if unknown:
        raise UnsupportedKustomization(f"{what} fields {sorted(unknown)}: teach tests/kustomize_lite.py")


def _generate(objects, kind: str, generator: dict[str, Any], directory: Path, env_examples: bool) -> None:
    _refuse_unknown(f"{kind} generator", generator, GENERATOR_FIELDS)
    data: dict[str, str] = {}
    for name in generator.get("envs", []):
        path = directory / name
        if not path.exists() and env_examples:
            path = path.with_name(path.name + ".example")
        data |= read_env_file(path)
    if kind == "Secret":
        data = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    behavior = generator.get("behavior", "create")
    if behavior == "merge":
        find(objects, kind, generator["name"])["data"].update(data)
        return
    if behavior != "create":
        raise UnsupportedKustomization(f"generator behavior {behavior!r}")
    generated: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": generator["name"]}, "data": data}
    if kind == "Secret":
        generated["type"] = "Opaque"
    objects.append(generated)


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A strategic merge as the patches here need it: maps merge, lists of named items
    merge by name, any other list is replaced."""
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value)
        elif _named_list(value) and _named_list(current):
            by_name = {item["name"]: item for item in current}
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                else:
                    current.append(item)
        else:
            target[key] = value


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) and "name" in i for i in value)


def _set_image(objects, image: dict[str, Any]) -> None:
    for workload in (o for o in objects if o["kind"] in WORKLOADS):
        for container in containers(workload):
            name, tag = split_image(container["image"])
            if name == image["name"]:
                new_tag = image.get("newTag", tag)
                container["image"] = image.get("newName", name) + (f":{new_tag}" if new_tag else "")


def _set_namespace(objects, namespace: str) -> None:
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "RoleBinding":
            for subject in obj.get("subjects", []):
                if subject["kind"] == "ServiceAccount":
                    subject["namespace"] = namespace
