"""`ibflow migrate --to` / `--status`: which way a target lies, which service a revision
belongs to, and what the status table says, without a database."""

from __future__ import annotations

import pytest

from ibflow.migrations_cli import MigrationRefused, plan, status_rows, summary
from shared.schema_migration import RevisionInfo, SchemaStatus, UnknownRevisionError

pytestmark = pytest.mark.unit


def status(revisions: list[str], current: str | None) -> SchemaStatus:
    applied = set(revisions[: revisions.index(current) + 1]) if current in revisions else set()
    return SchemaStatus(current=current, head=revisions[-1], revisions=[
        RevisionInfo(r, revisions[i - 1] if i else None, f"step {i + 1}", r in applied)
        for i, r in enumerate(revisions)])


ARTIFACTS = ["a7c1e2f40001", "a7c1e2f40002", "a7c1e2f40003"]
SCHEDULER = ["sched_0001", "sched_0002"]


@pytest.mark.parametrize("current, target, resolved, way", [
    ("a7c1e2f40003", "a7c1e2f40001", "a7c1e2f40001", "down"),
    ("a7c1e2f40001", "head", "a7c1e2f40003", "up"),
    ("a7c1e2f40002", "a7c1e2f40002", "a7c1e2f40002", "none"),
    ("a7c1e2f40002", "-1", "a7c1e2f40001", "down"),
    ("a7c1e2f40002", "+1", "a7c1e2f40003", "up"),
    ("a7c1e2f40001", "-1", None, "down"),
    ("a7c1e2f40002", "base", None, "down"),
    (None, "a7c1e2f40002", "a7c1e2f40002", "up"),
    (None, "base", None, "none"),
])
def test_a_target_resolves_to_a_revision_and_a_direction(current, target, resolved, way):
    found = status(ARTIFACTS, current)
    assert found.resolve(target) == resolved
    assert found.direction_to(target) == way


def test_a_unique_prefix_names_its_revision():
    assert status(["1f2e3d4c", "9a8b7c6d"], "9a8b7c6d").resolve("1f2") == "1f2e3d4c"


@pytest.mark.parametrize("current, target, words", [
    ("a7c1e2f40003", "nope", "names no revision"),
    ("a7c1e2f40003", "a7c1e2f4000", "could be any of"),
    ("a7c1e2f40003", "+1", "goes past"),
    ("a7c1e2f40009", "-1", "does not know"),
])
def test_targets_that_name_nothing_are_refused_in_words(current, target, words):
    with pytest.raises(UnknownRevisionError, match=words):
        status(ARTIFACTS, current).direction_to(target)


def test_a_database_ahead_of_the_code_is_not_moved_by_guess():
    ahead = status(ARTIFACTS, "a7c1e2f40009")
    assert not ahead.known and not ahead.at_head
    with pytest.raises(UnknownRevisionError, match="newer release"):
        ahead.direction_to("a7c1e2f40002")


def test_a_revision_picks_its_service_and_head_moves_every_service():
    found = {"artifacts": status(ARTIFACTS, "a7c1e2f40003"), "scheduler": status(SCHEDULER, "sched_0001")}
    [move] = plan(found, "a7c1e2f40002", None)
    assert (move.service, move.current, move.target, move.direction) == (
        "artifacts", "a7c1e2f40003", "a7c1e2f40002", "down")
    assert [(m.service, m.direction) for m in plan(found, "head", None)] == [("artifacts", "none"),
                                                                            ("scheduler", "up")]
    with pytest.raises(MigrationRefused, match="no service's history has a revision 'zzz'"):
        plan(found, "zzz", None)
    with pytest.raises(MigrationRefused, match="scheduler:"):
        plan({"scheduler": found["scheduler"]}, "a7c1e2f40002", "scheduler")


def test_status_marks_current_applied_and_pending():
    found = {"artifacts": status(ARTIFACTS, "a7c1e2f40002")}
    assert [row[:3] for row in status_rows(found)] == [
        ("artifacts", "a7c1e2f40001", "applied"), ("artifacts", "a7c1e2f40002", "current"),
        ("artifacts", "a7c1e2f40003", "pending")]
    assert summary("artifacts", found["artifacts"]) == (
        "artifacts: at a7c1e2f40002, head a7c1e2f40003: 1 to apply (`ibflow migrate`)")
    assert summary("artifacts", status(ARTIFACTS, "a7c1e2f40003")) == "artifacts: at head a7c1e2f40003"
