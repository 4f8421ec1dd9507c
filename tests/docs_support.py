"""The code blocks of the documentation, and how each kind is run (tests/test_docs.py).

The convention is written up in docs/development.md ("Code blocks in the documentation"): a block's
info string is its language, then optional words. `no-run` keeps a block from running; `file=PATH`
makes it a file of the page's scratch folder rather than a command. `text` blocks (output, log lines,
diagrams, synopses) are never run. Every other block runs: python, sh/bash/shell, console
transcripts, yaml and json.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tokenize
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGES = (REPO / "README.md", REPO / "README_zh.md", *sorted((REPO / "docs").glob("*.md")))

RUNNABLE = {"python", "sh", "bash", "shell", "console", "yaml", "json"}
NOT_CODE = "text"
NO_RUN = "no-run"
# The endpoint the documentation uses; a block's copy of it is rewritten to the test's service.
DOC_ENDPOINTS = ("127.0.0.1:8000", "localhost:8000")
# What a page's scratch folder links to, so that commands written for a checkout work in it.
CHECKOUT_LINKS = (".venv", "scripts", "template.yaml", "functions", "tests")

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_SHELL_PRELUDE = """\
# Blocks run as root: sudo runs the command as it is (its options dropped, VAR=value kept).
sudo() { while [[ $# -gt 0 && $1 == -* ]]; do shift; done; env "$@"; }
"""
_MARK = "@@docs-block-command-done@@"


@dataclass(frozen=True)
class Block:
    page: Path  # relative to the repository
    line: int  # the opening fence's line
    info: str
    text: str  # dedented by the fence's indentation

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def lang(self) -> str:
        words = self.info.split()
        return words[0] if words else ""

    @property
    def tags(self) -> set[str]:
        return set(self.info.split()[1:])

    @property
    def file(self) -> str | None:
        return self._word("file=")

    @property
    def into(self) -> str | None:
        return self._word("into=")

    def _word(self, prefix: str) -> str | None:
        """The value of the info string's `prefix...` word, if it has one."""
        for word in self.info.split()[1:]:
            if word.startswith(prefix):
                return word.removeprefix(prefix)
        return None

    @property
    def runs(self) -> bool:
        return self.lang in RUNNABLE and NO_RUN not in self.tags

    def problem(self) -> str | None:
        """Why this block breaks the convention, or None."""
        if not self.lang:
            return "a fence without a language: say `text` for output and diagrams, or name the language"
        if self.lang != NOT_CODE and self.lang not in RUNNABLE and NO_RUN not in self.tags:
            return f"`{self.lang}` blocks cannot be run: mark it `{self.lang} {NO_RUN}`, or make it `text`"
        unknown = {tag for tag in self.tags if tag != NO_RUN and not tag.startswith(("file=", "into="))}
        if unknown:
            return f"unknown words in the info string: {sorted(unknown)}"
        return None


def blocks(page: Path) -> list[Block]:
    """Every fenced block of a Markdown page, in order."""
    lines = page.read_text().splitlines()
    found = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            closing = _FENCE.match(lines[end])
            if (
                closing
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            body.append(lines[end][indent:] if lines[end][:indent].strip() == "" else lines[end])
            end += 1
        else:
            raise AssertionError(f"{page.relative_to(REPO)}:{index + 1}: a fence that is never closed")
        text = "\n".join(body) + "\n"
        name = page.relative_to(REPO) if page.is_relative_to(REPO) else Path(page.name)
        found.append(Block(name, index + 1, opening["info"].strip(), text))
        index = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page)]


def code_without_comments(text: str) -> str:
    """The block without `# ...` comments and blank lines (a rough cut, to compare translations)."""
    lines = (re.sub(r"(^|\s+)#\s.*$", "", line).rstrip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def rewrite_endpoint(text: str, port: int) -> str:
    for endpoint in DOC_ENDPOINTS:
        text = text.replace(endpoint, f"127.0.0.1:{port}")
    return text


# --- reading the reference pages -------------------------------------------------------------------


def sections(page: Path) -> dict[str, str]:
    """Heading → the text under it, until the next heading of any level (a `#` in a code block is no
    heading)."""
    sections: dict[str, str] = {}
    heading, in_block = "", False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_block = not in_block
        if line.startswith("#") and not in_block:
            heading = line.lstrip("#").strip()
            sections[heading] = ""
        else:
            sections[heading] = sections.get(heading, "") + line + "\n"
    return sections


def table_column(text: str, column: int) -> list[str]:
    """The cells of one column of the Markdown tables in `text`, header rows left out."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    separator = re.compile(r"\|\s*:?-")
    cells = []
    for index, row in enumerate(rows):
        is_header = index + 1 < len(rows) and separator.match(rows[index + 1])
        if not separator.match(row) and not is_header:
            cells.append([cell.strip() for cell in row.strip().strip("|").split("|")][column])
    return cells


def route_table(page: Path) -> dict[str, set[str]]:
    """The route table of api-reference.md (its "Routes" section): path, with `{}` for each parameter →
    its methods."""
    table = sections(page)["Routes"]
    routes: dict[str, set[str]] = {}
    for methods, path in zip(table_column(table, 0), table_column(table, 1), strict=True):
        routes.setdefault(normal_path(path.strip("`")), set()).update(re.findall(r"[A-Z]+", methods))
    return routes


def normal_path(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


# --- expected output -------------------------------------------------------------------------------


def matches(expected: str, actual: str) -> bool:
    """`actual` is `expected`, where each `...` in `expected` stands for any text (lines included), and
    spaces stand for any run of spaces and tabs; trailing spaces and blank lines at either end do not count."""
    pattern = ".*?".join(_spaced(part) for part in _tidy(expected).split("..."))
    return re.fullmatch(pattern, _tidy(actual), re.DOTALL) is not None


def _spaced(text: str) -> str:
    return "".join("[ \t]+" if part.isspace() else re.escape(part) for part in re.split(r"([ \t]+)", text) if part)


def _tidy(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip("\n")


def printed_expectations(source: str) -> list[str]:
    """In Python: the trailing comment of each line that calls print(...), what it prints."""
    expected = []
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    first_on_line: dict[int, tokenize.TokenInfo] = {}
    for token in tokens:
        if token.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.NEWLINE):
            continue
        first_on_line.setdefault(token.start[0], token)
    for token in tokens:
        if token.type != tokenize.COMMENT:
            continue
        first = first_on_line.get(token.start[0])
        if first is not None and first is not token and first.string == "print":
            expected.append(token.string.removeprefix("#").strip())
    return expected


def missing_printed(expected: list[str], stdout: str) -> list[str]:
    """The expected lines that no line of stdout matches (with `...`); the order is not checked, since
    the order of the print calls in the source need not be the order they run in."""
    lines = _tidy(stdout).splitlines()
    return [want for want in expected if not any(matches(want, line) for line in lines)]


# --- console transcripts ---------------------------------------------------------------------------


@dataclass
class Step:
    command: str
    expected: str


def transcript(text: str) -> list[Step]:
    """`$ command` lines (continued by a trailing backslash) and, after each, the output it shows."""
    steps: list[Step] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith("$ "):
            if not steps:
                raise AssertionError(f"a console block starts with output, not a `$ ` command: {line!r}")
            steps[-1].expected += line + "\n"
            index += 1
            continue
        command = [line[2:]]
        while command[-1].endswith("\\") and index + 1 < len(lines):
            index += 1
            command.append(lines[index])
        steps.append(Step("\n".join(command), ""))
        index += 1
    return steps


def console_script(steps: list[Step]) -> str:
    """One bash script for the whole transcript, which marks where each command's output ends and keeps
    `$?` for the next command."""
    parts = [_SHELL_PRELUDE, "exec 2>&1"]
    for step in steps:
        parts += [step.command, f"__status=$?; printf '\\n%s\\n' '{_MARK}'; (exit $__status)"]
    return "\n".join(parts) + "\n"


def console_outputs(output: str) -> list[str]:
    """Each command's output (the newline before each mark is the script's, not the command's)."""
    return [part.removesuffix("\n") for part in output.split(f"\n{_MARK}\n")[:-1]]


def shell_script(text: str) -> str:
    return f"{_SHELL_PRELUDE}set -eo pipefail\n{text}"


# --- running ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    command: str
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"{self.command}: exit {self.returncode}\n--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float, stdin: str = "") -> Outcome:
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        raise AssertionError(f"{argv[0]} did not finish within {timeout} s; output so far:\n{out}") from None
    return Outcome(" ".join(argv[:2]), done.returncode, done.stdout, done.stderr)


def scratch_environment(scratch: Path, uid_range: tuple[int, int]) -> dict[str, str]:
    """What a block runs with: the venv first on PATH, no AWS or SANDBOX_* setting of the host (an example
    sets what it needs), and the test's own block of sandbox uids for the commands that start sandboxes."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "SANDBOX_"))}
    environment.update(
        PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        AWS_CONFIG_FILE=str(scratch / ".no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(scratch / ".no-aws-credentials"),
        SANDBOX_UID_RANGE=f"{uid_range[0]}-{uid_range[1]}",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return environment


def make_scratch(folder: Path, page_blocks: list[Block]) -> Path:
    """A folder that looks like a checkout (the links of CHECKOUT_LINKS), with the page's `file=` blocks
    written into it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in CHECKOUT_LINKS:
        (folder / name).symlink_to(REPO / name)
    for block in page_blocks:
        if block.file and NO_RUN not in block.tags:
            target = folder / block.file
            assert not Path(block.file).is_absolute() and ".." not in Path(block.file).parts, block.id
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text)
    return folder


def json_documents(text: str) -> list[object]:
    """One JSON document, or JSON lines (one document per line)."""
    try:
        return [json.loads(text)]
    except json.JSONDecodeError as whole:
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            return [json.loads(line) for line in lines]
        except json.JSONDecodeError:
            raise AssertionError(f"not JSON (nor JSON lines): {whole}") from None
