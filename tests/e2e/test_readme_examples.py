"""The README runs as written: every shell and Python example, against a real stack.

Each ```sh or ```python block of the README comes right after a comment that says how
it is tested:

    <!-- readme-test: stack -->          runs against the stack this module starts
    <!-- readme-test: no-stack -->       runs with no stack at all
    <!-- readme-test: skip: <why> -->    left out, for the reason given (`make run` runs
                                         until stopped, docker compose needs Docker)

A block without one fails `test_every_example_says_how_it_is_tested`: nothing is left
out silently. The stack blocks run in the README's order, shell blocks with
`bash -euo pipefail` from the repository root, Python blocks as scripts. The examples
name `make run`'s addresses; they run with the test stack's instead
(http://127.0.0.1:8000 becomes its gateway, 127.0.0.1:19092 its broker). No ibflow
variable is set for them: the `ibflow` tools find the stack through its stack file, as
they find `make run`'s.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ibflow import stack_config

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MAKE_RUN_GATEWAY = "http://127.0.0.1:8000"
MAKE_RUN_BROKER = "127.0.0.1:19092"
LANGUAGES = {"sh": "shell", "bash": "shell", "shell": "shell", "python": "python", "py": "python"}
BLOCK = re.compile(
    r"^(?:<!--\s*readme-test:\s*(?P<mark>.*?)\s*-->\n)?"
    r"```(?P<lang>[A-Za-z]+)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
WORKFLOW = "ibkr_trading_signal_workflow"


@dataclass(frozen=True)
class Example:
    line: int
    kind: str  # shell | python
    mark: str | None
    body: str

    @property
    def name(self) -> str:
        first = next((ln for ln in self.body.splitlines() if ln.strip() and not ln.startswith(("import", "from"))), "")
        return f"README:{self.line} {first.strip()[:50]}"


def examples() -> list[Example]:
    text = README.read_text()
    found = []
    for match in BLOCK.finditer(text):
        kind = LANGUAGES.get(match["lang"].lower())
        if kind is None:
            continue
        line = text.count("\n", 0, match.start("lang")) + 1
        found.append(Example(line, kind, match["mark"], match["body"]))
    return found


def of_mark(mark: str) -> list[Example]:
    return [example for example in examples() if example.mark == mark]


def test_every_example_says_how_it_is_tested():
    unmarked = [e.name for e in examples() if not e.mark]
    assert not unmarked, "README examples without a <!-- readme-test: ... --> comment right before them"
    for example in examples():
        assert example.mark in ("stack", "no-stack") or re.fullmatch(r"skip: \S.*", example.mark), \
            f"{example.name}: unknown mark {example.mark!r}"


def test_what_is_left_out_is_what_cannot_run_here():
    skipped = " ".join(e.body for e in examples() if e.mark.startswith("skip"))
    assert "make run" in skipped and "docker compose" in skipped
    assert len(of_mark("stack")) >= 5


@pytest.fixture(scope="module")
def stack(start_stack):
    stack = start_stack()
    # The examples change the schedule's cron: nothing may fire while the module runs.
    response = httpx.post(f"{stack.gateway_url}/api/workflows/{WORKFLOW}/pause", timeout=10)
    assert response.status_code == 200, response.text
    return stack


def example_env(stack=None) -> dict[str, str]:
    """The user's shell: no ibflow variable set; the stack found through its file."""
    env = {k: v for k, v in os.environ.items() if k not in stack_config.RECORDED}
    env[stack_config.STACK_FILE_ENV] = str(
        stack_config.stack_file(stack.workdir) if stack else REPO / "var" / "no-stack-here.json")
    return env


def run_example(example: Example, env: dict[str, str], tmp_path: Path, stack=None) -> None:
    body = example.body
    if stack is not None:
        body = body.replace(MAKE_RUN_GATEWAY, stack.gateway_url)
        body = body.replace(MAKE_RUN_BROKER, stack.env["KAFKA_BOOTSTRAP_SERVERS"])
    if example.kind == "shell":
        argv = ["bash", "-euo", "pipefail", "-c", body]
    else:
        script = tmp_path / "example.py"
        script.write_text(body)
        argv = [sys.executable, str(script)]
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"{example.name} exited with {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


@pytest.mark.parametrize("example", of_mark("stack") + of_mark("no-stack"), ids=lambda e: e.name)
def test_example_runs(example, request, tmp_path):
    if example.mark == "no-stack":
        run_example(example, example_env(), tmp_path)
        return
    stack = request.getfixturevalue("stack")
    assert stack_config.stack_file(stack.workdir).exists(), "ibflow up records its stack"
    run_example(example, example_env(stack), tmp_path, stack)


def readme_api_table() -> set[tuple[str, str]]:
    text = README.read_text()
    start = text.index("## HTTP API")
    section = text[start:text.index("\n## ", start + 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {(method, path) for row in rows
            for method, path in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`]*)`", row.split("|")[1])}


def test_the_api_table_lists_every_public_path_and_no_other(stack):
    document = httpx.get(f"{stack.gateway_url}/openapi.json", timeout=30).json()
    served = {(method.upper(), path) for path, item in document["paths"].items() for method in item
              if method in ("get", "post", "put", "patch", "delete")}
    listed = readme_api_table()
    assert served - listed == set(), "public paths missing from the README's API table"
    documented_api = {(m, p) for m, p in listed if p.startswith("/api") or p == "/health"}
    assert documented_api - served == set(), "paths in the README's API table that the API does not serve"
    for method, path in listed - documented_api:  # the documentation pages, outside OpenAPI
        assert httpx.request(method, f"{stack.gateway_url}{path}", timeout=30).status_code == 200, path


def test_the_api_index_answers(stack):
    response = httpx.get(f"{stack.gateway_url}/api/", timeout=30)
    assert response.status_code == 200
    hrefs = {link["href"] for link in response.json()["collections"] + response.json()["documentation"]}
    assert {"/api/artifacts/", "/api/runs", "/api/workflows", "/docs", "/asyncapi"} <= hrefs
