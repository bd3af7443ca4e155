"""Services never import each other; shared imports no service (docs/architecture.md)."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (REPO / "services").iterdir() if (p / "__init__.py").exists())


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def violations(package: Path, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in package.rglob("*.py"):
        for module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{path.name} imports {module}")
    return found


def test_the_four_services_exist():
    assert {"scheduler", "signals", "artifacts", "gateway"} <= set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service(service):
    others = tuple(f"services.{other}" for other in SERVICES if other != service)
    assert violations(REPO / "services" / service, others + ("ibflow",)) == []


def test_shared_imports_no_service():
    assert violations(REPO / "shared", ("services", "ibflow")) == []


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "m.py").write_text("from services.artifacts.db import models\nimport services.gateway\n")
    assert sorted(violations(bad, ("services.artifacts", "services.gateway"))) == [
        "m.py imports services.artifacts.db",
        "m.py imports services.artifacts.db.models",
        "m.py imports services.gateway",
    ]
