"""Every code block of README.md, README_zh.md and docs/*.md, run against the real service (one for the
module), each as its own test; and the parts of api-reference.md that a running service can check.
The reference pages against the code: test_docs_reference.py.

How blocks are marked and run: docs/development.md, "Code blocks in the documentation".
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BUNDLED_TEMPLATE, ServiceProcess
from docs_runner import DocsRunner
from docs_support import (
    NO_RUN,
    NOT_CODE,
    PAGES,
    REPO,
    Block,
    all_blocks,
    blocks,
    code_without_comments,
    console_outputs,
    console_script,
    matches,
    missing_printed,
    normal_path,
    printed_expectations,
    route_table,
    transcript,
)

BLOCKS = all_blocks()
CODE_BLOCKS = [block for block in BLOCKS if block.lang != NOT_CODE]


@pytest.fixture(scope="module")
def docs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsRunner]:
    """One service for every block; the selected blocks start running at once, a few pages side by side."""
    selected = [
        item.callspec.params["block"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_block" and item.module is request.module
    ]
    runner = DocsRunner(ServiceProcess(BUNDLED_TEMPLATE), tmp_path_factory.mktemp("docs"))
    try:
        runner.start([block for block in selected if block.runs])
        yield runner
    finally:
        runner.close()


@pytest.mark.parametrize("block", CODE_BLOCKS, ids=[block.id for block in CODE_BLOCKS])
def test_block(docs: DocsRunner, block: Block) -> None:
    if problem := block.problem():
        pytest.fail(f"{block.id}: {problem}")
    if not block.runs:
        pytest.skip(f"marked {NO_RUN}")
    docs.check(block)


def test_every_block_is_run_or_marked() -> None:
    """No block goes unchecked without saying so: each is code that runs, `text`, or marked no-run."""
    problems = [f"{block.id}: {problem}" for block in BLOCKS if (problem := block.problem())]
    assert not problems, "\n".join(problems)
    assert len(PAGES) >= 12 and sum(block.runs for block in BLOCKS) >= 40


def test_the_block_reader_finds_every_fence(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```python\nprint(1)\n```\n\n1. item\n\n   ```sh no-run\n   ls\n   ```\n\n````text\n```\n````\n"
    )
    found = [(b.line, b.lang, b.tags, b.text) for b in blocks(page)]
    assert found == [(2, "python", set(), "print(1)\n"), (8, "sh", {NO_RUN}, "ls\n"), (12, "text", set(), "```\n")]
    assert Block(Path("p"), 1, "", "x").problem() and Block(Path("p"), 1, "ini", "x").problem()
    assert Block(Path("p"), 1, "ini no-run", "x").problem() is None
    assert Block(Path("p"), 1, "sh no-rnu", "x").problem()  # a misspelt tag is not taken for no-run


def test_expected_output_is_compared() -> None:
    assert matches("{'a': 1, 'id': '...'}\n", "{'a': 1, 'id': 'f00'}")
    assert not matches("{'a': 1, 'id': '...'}", "{'a': 2, 'id': 'f00'}")
    assert matches("first\n...\nlast", "first\nsecond\nthird\nlast\n")
    source = "x = 1\nprint(x)   # 1\nprint(x + 1)\n# 3\nfor i in (1,):\n    print(i)  # ...\n"
    assert printed_expectations(source) == ["1", "..."]
    assert missing_printed(["3", "1", "2"], "1\n3\n") == ["2"]
    steps = transcript("$ echo a \\\n  b\na b\n$ false; echo $?\n1\n")
    assert [(s.command, s.expected) for s in steps] == [("echo a \\\n  b", "a b\n"), ("false; echo $?", "1\n")]
    done = subprocess.run(["bash", "-c", console_script(steps)], capture_output=True, text=True, check=False)
    assert console_outputs(done.stdout) == ["a b", "1"]


# --- README_zh.md follows README.md ----------------------------------------------------------------


def test_readme_zh_has_the_readme_s_examples() -> None:
    english, chinese = blocks(REPO / "README.md"), blocks(REPO / "README_zh.md")
    assert [b.info for b in chinese] == [b.info for b in english]
    for en, zh in zip(english, chinese, strict=True):
        assert code_without_comments(zh.text) == code_without_comments(en.text), f"{zh.id} differs from {en.id}"
    # The same sections, pointing at the same pages (each README links to the other).
    en_text, zh_text = (REPO / "README.md").read_text(), (REPO / "README_zh.md").read_text()
    assert len(re.findall(r"^#+ ", zh_text, re.M)) == len(re.findall(r"^#+ ", en_text, re.M))
    links = [set(re.findall(r"\]\(([^)#\s]+)", text)) for text in (en_text, zh_text)]
    assert links[0] - {"README_zh.md"} == links[1] - {"README.md"}


# --- api-reference.md against the running service ---------------------------------------------------

API_REFERENCE = REPO / "docs" / "api-reference.md"


def test_openapi_describes_the_documented_routes(docs: DocsRunner) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{docs.service.url}/openapi.json", timeout=30) as response:
        document = json.load(response)
    described = {normal_path(path): {m.upper() for m in item} for path, item in document["paths"].items()}
    # The document has one of each pair of paths that differ by a trailing slash (botocore's and AWS's).
    documented: dict[str, set[str]] = {}
    for path, methods in route_table(API_REFERENCE).items():
        documented.setdefault(path.rstrip("/"), set()).update(methods)
    # Not in the document, as api-reference.md says: MCP's transport and the sessions API's catch-all.
    for path in ("/mcp", "/workspace/se/{}"):
        del documented[path]
    assert {path.rstrip("/"): methods for path, methods in described.items()} == documented


def test_the_health_example_has_the_fields_of_a_real_answer(docs: DocsRunner) -> None:
    """api-reference.md shows a real /health answer: the same fields, at every level that does not depend on
    the functions, the backend or the machine."""
    (example,) = [
        json.loads(block.text) for block in blocks(API_REFERENCE) if block.lang == "json" and '"pools"' in block.text
    ]
    real = docs.service.health()

    def at(document: dict, path: str) -> set[str]:
        for key in filter(None, path.split(".")):
            document = document[key]
        return set(document)

    for path in ("", "pools", "pools.environments", "pools.limits", "pools.backend", "pools.generic_sandboxes"):
        assert at(example, path) == at(real, path), path or "the top level"
    for path in ("sessions", "sessions.pool", "events", "network"):
        assert at(example, path) == at(real, path), path
    assert at(example, "pools.functions.hello") == at(real, "pools.functions.hello")


def _json_under(page: Path, heading: str) -> dict:
    """The first json block after a heading of the page."""
    text = page.read_text()
    start = text.index(f"\n{heading}\n")
    (first,) = [b for b in blocks(page) if b.lang == "json" and b.line > text[:start].count("\n") + 1][:1]
    return json.loads(first.text)


def test_the_session_examples_have_the_fields_of_real_answers(docs: DocsRunner) -> None:
    """The sessions API's answers as api-reference.md shows them have the fields a real session's have."""
    import httpx

    prefix = "### "
    with httpx.Client(base_url=f"{docs.service.url}/workspace/se", timeout=30) as http:
        real = {
            "POST /workspace/se/session/{session_id}": http.post("/session/docs-fields").json(),
            "POST /workspace/se/execute_code/{session_id}": http.post(
                "/execute_code/docs-fields",
                json={"code": "def handler(event):\n    return {'doubled': event['n'] * 2}", "event": {"n": 21}},
            ).json(),
            "POST /workspace/se/upload/{session_id}": http.post(
                "/upload/docs-fields", files={"file": ("data.csv", b"a,b\n")}, data={"path": "data/"}
            ).json(),
            "GET /workspace/se/files/{session_id}": http.get("/files/docs-fields").json(),
            "GET /workspace/se/status/{session_id}": http.get("/status/docs-fields").json(),
        }
        http.delete("/session/docs-fields")
    for heading, answer in real.items():
        example = _json_under(API_REFERENCE, prefix + heading)
        assert answer["success"] and set(example["data"]) == set(answer["data"]), heading
        for key, value in example["data"].items():
            if isinstance(value, dict):
                assert set(value) == set(answer["data"][key]), f"{heading}: {key}"
            if isinstance(value, list) and value and isinstance(value[0], dict):
                assert set(value[0]) == set(answer["data"][key][0]), f"{heading}: {key}"
