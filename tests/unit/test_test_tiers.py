"""Every test module says which tier it belongs to, so `-m unit` and friends select exactly
the folder they name, and --strict-markers turns a misspelt marker into an error."""

import ast
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
TESTS = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "e2e", "browser", "chaos")
MODULES = sorted(p for tier in TIERS for p in (TESTS / tier).glob("test_*.py"))


def module_marks(path: Path) -> list[str]:
    """The marker names a module's top-level `pytestmark` assignment sets (one mark or a list)."""
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            values = node.value.elts if isinstance(node.value, ast.List | ast.Tuple) else [node.value]
            return [ast.unparse(v).removeprefix("pytest.mark.") for v in values]
    return []


def test_every_tier_folder_has_tests():
    assert {p.parent.name for p in MODULES} == set(TIERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_module_sets_pytestmark_with_its_tier(path):
    assert path.parent.name in module_marks(path), f"{path.name} lacks pytestmark = pytest.mark.{path.parent.name}"


def test_markers_are_strict_and_every_tier_is_registered():
    options = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in options["addopts"].split()
    registered = {m.split(":")[0].strip() for m in options["markers"]}
    assert set(TIERS) <= registered
