"""References stay inside the repository, and the links of the docs resolve.

The notes ibflow was designed from are not part of the repository, so a comment that
points at them leaves a newcomer with nothing to read: what they said lives in `docs/`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
# Spelled so that this file does not match itself: the section sign as UTF-8 bytes, a
# character class in the middle of the words and paths.
OUTSIDE_REFERENCES = re.compile(rb"DESIGN \xc2\xa7|BROKER[-]NOTES|IBKR[-]NOTES|\.\./share[d]|/work/share[d]")
MARKDOWN_WITH_LINKS = sorted(DOCS.glob("*.md")) + [REPO / "README.md"]

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`+[^`\n]*`+")
_INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def tracked_files() -> list[Path]:
    result = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    assert result.returncode == 0, f"`git ls-files` failed in {REPO}: {result.stderr.decode(errors='replace')}"
    return [REPO / name for name in result.stdout.decode().split("\0") if name]


def unfenced_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, without their inline code spans."""
    return [_CODE_SPAN.sub("", line) for line in unfenced_lines(text)]


def links_in(text: str) -> list[str]:
    links = []
    for line in prose_lines(text):
        links += _INLINE_LINK.findall(line)
        if match := _REFERENCE_DEFINITION.match(line):
            links.append(match.group(1))
    return links


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped,
    spaces as hyphens, `-1`, `-2`... for repeats."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in unfenced_lines(text):
        if match := _HEADING.match(line):
            slug = re.sub(r"[^\w\- ]", "", match.group(2).lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(markdown: Path) -> list[str]:
    text = markdown.read_text(encoding="utf-8")
    broken = []
    for link in links_in(text):
        if _SCHEME.match(link):
            continue  # http:, https:, mailto:: not a file of the repository
        path_part, _, anchor = link.partition("#")
        target = (markdown.parent / path_part).resolve() if path_part else markdown
        if not target.is_relative_to(REPO):
            broken.append(f"{link}: points outside the repository")
        elif not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in heading_anchors(target.read_text(encoding="utf-8")):
            broken.append(f"{link}: {target.relative_to(REPO)} has no heading #{anchor}")
    return broken


def test_no_tracked_file_refers_to_documents_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if not path.is_file():
            continue  # deleted in the work tree, not yet in a commit
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if OUTSIDE_REFERENCES.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.decode(errors='replace').strip()}")
    assert offenders == [], "point these at a page under docs/ instead:\n" + "\n".join(offenders)


@pytest.mark.parametrize("markdown", MARKDOWN_WITH_LINKS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_files_that_exist(markdown: Path):
    assert broken_links(markdown) == []


def test_the_docs_index_lists_every_page():
    listed = {link.partition("#")[0] for link in links_in((DOCS / "README.md").read_text(encoding="utf-8"))}
    pages = {page.name for page in DOCS.glob("*.md") if page.name != "README.md"}
    assert pages - listed == set()


def test_links_are_found_in_prose_only_and_anchors_are_githubs():
    text = (
        "See [the map](architecture.md#the-picture), ![a chart](img/c.png \"title\") and "
        "[a site](https://example.com).\n"
        "Not `[code](in-a-span.md)`.\n"
        "```\n[fenced](in-a-block.md)\n```\n"
        "[ref]: decisions.md\n"
    )
    assert links_in(text) == ["architecture.md#the-picture", "img/c.png", "https://example.com", "decisions.md"]
    assert heading_anchors("# The `ib_async` client, briefly\n## Notes\n## Notes\n") == {
        "the-ib_async-client-briefly", "notes", "notes-1",
    }


def test_the_outside_patterns_match_what_they_are_meant_to():
    for reference in ("DESIGN \u00a74", "see BROKER" "-NOTES rule 2", "IBKR" "-NOTES", "../" "shared/DESIGN.md"):
        assert OUTSIDE_REFERENCES.search(reference.encode()), reference
    assert not OUTSIDE_REFERENCES.search("docs/broker-notes.md, shared/kafka.py".encode())
