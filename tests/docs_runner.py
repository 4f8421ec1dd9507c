"""Runs the documentation's code blocks (tests/test_docs.py) against one service: the pages side by side,
each page's blocks in order, in the page's scratch folder.

How each kind of block is checked is in docs/development.md, "Code blocks in the documentation".
"""

from __future__ import annotations

import threading
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import yaml
from conftest import ServiceProcess, assert_no_sandbox_left, claim_uid_range, release_uid_range
from docs_support import (
    REPO,
    Block,
    blocks,
    code_without_comments,
    console_outputs,
    console_script,
    json_documents,
    make_scratch,
    matches,
    missing_printed,
    printed_expectations,
    rewrite_endpoint,
    run,
    scratch_environment,
    shell_script,
    transcript,
)

BLOCK_TIMEOUT = 60
PAGES_AT_ONCE = 3
PYTHON = str(REPO / ".venv" / "bin" / "python")


class DocsRunner:
    """The service the blocks talk to, a scratch folder and a block of sandbox uids per page, and one run
    per distinct block."""

    def __init__(self, service: ServiceProcess, root: Path) -> None:
        self.service = service
        self.root = root
        self._lock = threading.Lock()
        self._scratch: dict[Path, tuple[Path, tuple[int, int]]] = {}
        self._runs: dict[tuple[object, ...], Future[None]] = {}
        self._pool = ThreadPoolExecutor(PAGES_AT_ONCE, thread_name_prefix="docs")

    def start(self, selected: list[Block]) -> None:
        """Start running these blocks in the background: pages side by side, a page's blocks in order."""
        by_page: dict[Path, list[Block]] = defaultdict(list)
        for block in selected:
            by_page[block.page].append(block)
        for page_blocks in sorted(by_page.values(), key=len, reverse=True):
            self._pool.submit(self._run_all, page_blocks)

    def check(self, block: Block) -> None:
        """The block's outcome: raises what its run raised. Runs it here unless a run was started."""
        run_, mine = self._claim(block)
        if mine:
            self._run(block, run_)
        run_.result(timeout=BLOCK_TIMEOUT * 2)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            assert self.service.stop() == 0
        finally:
            for _, uid_range in self._scratch.values():
                assert_no_sandbox_left(uid_range, "the documentation's commands")
                release_uid_range(uid_range)

    def _run_all(self, page_blocks: list[Block]) -> None:
        for block in page_blocks:
            run_, mine = self._claim(block)
            if mine:
                self._run(block, run_)
            else:  # a test (or another page's copy) runs it: the page's next block waits for it, in order
                wait([run_], timeout=BLOCK_TIMEOUT * 2)

    def _claim(self, block: Block) -> tuple[Future[None], bool]:
        """The run of this block's code, and whether the caller is the one to do it. README_zh.md's copies
        of README.md's blocks, whose comments are translated, share a run; comments that show what a
        print prints are part of the code."""
        shown = tuple(printed_expectations(block.text)) if block.lang == "python" else ()
        key = (block.info, code_without_comments(block.text), shown, block.page.parent)
        with self._lock:
            if key in self._runs:
                return self._runs[key], False
            self._runs[key] = Future()
            return self._runs[key], True

    def _run(self, block: Block, into: Future[None]) -> None:
        try:
            self._check(block)
        except BaseException as exc:  # the test that waits for it raises it
            into.set_exception(exc)
        else:
            into.set_result(None)

    def _page(self, page: Path) -> tuple[Path, tuple[int, int]]:
        """The page's scratch folder, made once, and its own sandbox uids (pages run side by side)."""
        with self._lock:
            if page not in self._scratch:
                folder = self.root / page.as_posix().replace("/", "_").removesuffix(".md")
                self._scratch[page] = (make_scratch(folder, blocks(REPO / page)), claim_uid_range())
            return self._scratch[page]

    def _check(self, block: Block) -> None:
        scratch, uid_range = self._page(block.page)
        text = rewrite_endpoint(block.text, self.service.port)
        if block.lang == "yaml":
            check_yaml(block, scratch)
        elif block.lang == "json":
            json_documents(text)
        elif block.file:
            _check_file(block, scratch)
        elif block.lang == "python":
            _check_python(block, text, scratch, scratch_environment(scratch, uid_range))
        elif block.lang == "console":
            _check_console(text, scratch, scratch_environment(scratch, uid_range))
        else:
            env = scratch_environment(scratch, uid_range)
            outcome = run(["bash", "-c", shell_script(text)], cwd=scratch, env=env, timeout=BLOCK_TIMEOUT)
            assert outcome.returncode == 0, outcome


def _check_python(block: Block, text: str, scratch: Path, env: dict[str, str]) -> None:
    source = scratch / ".blocks" / f"{block.line}.py"
    source.parent.mkdir(exist_ok=True)
    source.write_text(text)
    outcome = run([PYTHON, str(source)], cwd=scratch, env=env, timeout=BLOCK_TIMEOUT)
    assert outcome.returncode == 0, outcome
    missing = missing_printed(printed_expectations(text), outcome.stdout)
    assert not missing, f"the block does not print what its comments show: {missing}\n{outcome}"


def _check_console(text: str, scratch: Path, env: dict[str, str]) -> None:
    steps = transcript(text)
    outcome = run(["bash", "-c", console_script(steps)], cwd=scratch, env=env, timeout=BLOCK_TIMEOUT)
    outputs = console_outputs(outcome.stdout)
    assert len(outputs) == len(steps), outcome
    for step, output in zip(steps, outputs, strict=True):
        assert matches(step.expected, output), (
            f"$ {step.command}\n--- the page shows:\n{step.expected}--- it printed:\n{output}"
        )


def _check_file(block: Block, scratch: Path) -> None:
    """A file= block is a file, not a command: written by make_scratch, checked for syntax here."""
    assert block.file is not None
    path = scratch / block.file
    if block.lang == "python":
        compile(path.read_text(), str(path), "exec")
    else:
        outcome = run(["bash", "-n", str(path)], cwd=scratch, env={}, timeout=10)
        assert outcome.returncode == 0, outcome


def check_yaml(block: Block, scratch: Path) -> None:
    """A SAM template is loaded by the service's template loader, and so is a fragment of one (resources,
    indented as in a template's Resources): alone, or added to the template `into=` names. Any other YAML
    is parsed."""
    from runtime_api.template import load_template

    text = block.text
    fragment = text.lstrip("\n")[:1] == " "
    if not fragment and "Resources:" not in text:
        assert list(yaml.safe_load_all(text)), "an empty YAML document"
        return
    if block.file:
        path = scratch / block.file
    else:
        path = scratch / ".blocks" / str(block.line) / "template.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        if block.into:  # the template's own folder, seen from here: its CodeUri folders resolve the same
            host = (scratch / block.into).resolve()
            assert host.read_text().rstrip().split("\n")[-1].startswith(" "), f"{block.into}: Resources is not last"
            for sibling in host.parent.iterdir():
                (path.parent / sibling.name).symlink_to(sibling)
            path.unlink(missing_ok=True)
            text = host.read_text().rstrip("\n") + "\n" + text
        elif fragment:
            text = 'Transform: "AWS::Serverless-2016-10-31"\nResources:\n' + text
        path.write_text(text)
    template = load_template(path)
    resources = yaml.load(text, Loader=_CloudFormationYaml)["Resources"]
    loaded = {f.logical_id for f in template.functions} | {layer.logical_id for layer in template.layers}
    loaded |= {logical_id for logical_id, _ in template.skipped}
    assert set(resources) <= loaded, f"resources the loader did not load: {set(resources) - loaded}"


class _CloudFormationYaml(yaml.SafeLoader):
    pass


_CloudFormationYaml.add_multi_constructor("!", lambda loader, suffix, node: None)
