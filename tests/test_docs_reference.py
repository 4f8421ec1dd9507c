"""The reference pages checked against the code, both ways: every flag and SANDBOX_* variable in
configuration.md, every route in api-reference.md, every error in troubleshooting.md, the layout and the
tables of development.md, and every link between the pages. (Their code blocks: test_docs.py.)"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

from docs_support import NOT_CODE, PAGES, REPO, blocks, normal_path, route_table, sections, table_column

# --- configuration.md: every flag, every variable --------------------------------------------------

CONFIGURATION = REPO / "docs" / "configuration.md"


def _flags_in(cells: list[str]) -> set[str]:
    return {flag for cell in cells for flag in re.findall(r"`(--?[a-z][a-z-]*)", cell)}


def _parser_flags(parser) -> set[str]:
    return {
        option
        for action in parser._actions
        for option in action.option_strings
        if option not in ("-h", "--help", "--version")
    }


def _subparsers(parser) -> dict:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_configuration_lists_every_flag_of_every_command() -> None:
    from runtime_api.cli import build_parser

    commands = _subparsers(build_parser())
    page = sections(CONFIGURATION)
    common = _flags_in(table_column(page["Options of `serve`, `invoke`, `mcp` and `build`"], 0))
    documented = {
        "serve": common | _flags_in(table_column(page["Options of `serve`"], 0)),
        "invoke": common | _flags_in(table_column(page["Options of `invoke`"], 0)),
        "mcp": common | _flags_in(table_column(page["`mcp`"], 0)),
        "build": common | _flags_in(table_column(page["`build`"], 0)),
    }
    for name, flags in documented.items():
        assert flags == _parser_flags(commands[name]), f"sandbox-runtime {name}"
    # generate-event: the options of every SERVICE EVENT, as its table lists them (besides --region).
    table = page["`generate-event`"]
    listed = _flags_in(table_column(table, 3)) | {"--region"}
    in_code = {
        flag
        for service in _subparsers(commands["generate-event"]).values()
        for event in _subparsers(service).values()
        for flag in _parser_flags(event)
    }
    assert listed == in_code
    assert set(commands) == {"serve", "invoke", "mcp", "build", "generate-event"}
    synopsis = page["Commands"]
    assert all(f"sandbox-runtime {name}" in synopsis or f"[{name}]" in synopsis for name in commands)


def _settings_variables() -> set[str]:
    from dataclasses import fields

    from runtime_api.config import Settings

    return {f.metadata["env"] for f in fields(Settings)}


# SANDBOX_ names in the code that are not settings: constants, and what the service sets inside sandboxes.
_NOT_SETTINGS = {
    "SANDBOX_UID": "sandbox/bwrap.py: the uid inside every sandbox (a constant)",
    "SANDBOX_GID": "sandbox/bwrap.py: the gid inside every sandbox (a constant)",
    "SANDBOX_SESSION_AGENT": "set inside a session's sandbox for its agent: where the service listens",
}


def _variables_in_code(*folders: str) -> set[str]:
    return _in_code(r"(?<![A-Z_])SANDBOX_[A-Z][A-Z0-9_]*[A-Z0-9]", *folders)


def test_configuration_lists_every_variable() -> None:
    table = sections(CONFIGURATION)["Environment variables"]
    documented = {re.sub(r"`", "", cell) for cell in table_column(table, 0)}
    assert documented == _settings_variables()
    in_code = _variables_in_code("runtime_api", "sandbox", "bootstrap", "sandbox_runtime")
    assert in_code - documented == set(_NOT_SETTINGS), "SANDBOX_ names read by the code but not documented"


def test_development_lists_the_test_suite_s_variables() -> None:
    table = sections(REPO / "docs" / "development.md")["Variables of the test suite"]
    documented = {re.sub(r"`", "", cell) for cell in table_column(table, 0)}
    used = _variables_in_code("tests", "bench") - _settings_variables() - set(_NOT_SETTINGS)
    used.discard("SANDBOX_RUNTIME")  # tests/test_cli.py: a Python name, the sandbox-runtime command
    assert documented == used


# --- api-reference.md: every route -----------------------------------------------------------------

API_REFERENCE = REPO / "docs" / "api-reference.md"


def test_api_reference_lists_every_route() -> None:
    from starlette.routing import Route

    from runtime_api.app import routes

    served: dict[str, set[str]] = {}
    for route in routes(mcp=None):
        assert isinstance(route, Route), route
        methods = set(route.methods or {"GET", "POST", "DELETE"}) - {"HEAD"}  # /mcp takes what MCP sends
        served.setdefault(normal_path(route.path), set()).update(methods)
    assert route_table(API_REFERENCE) == served


# --- troubleshooting.md: every error a user can meet -----------------------------------------------

TROUBLESHOOTING = REPO / "docs" / "troubleshooting.md"


def _message_fragments(*modules: str) -> set[str]:
    """The fixed parts (15 characters or more) of the messages of StartupError, RuntimeUnavailable and
    DockerUnavailable, and of the reasons a function is unavailable, as the code writes them."""
    raising = {"StartupError", "RuntimeUnavailable", "_unavailable"}
    fragments = set()
    for module in modules:
        for node in ast.walk(ast.parse((REPO / module).read_text())):
            message = None
            if (
                isinstance(node, ast.Call)
                and (getattr(node.func, "id", "") or getattr(node.func, "attr", "")) in raising
            ):
                message = node.args[0] if node.args else None
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Subscript) and getattr(t.value, "attr", "") == "unavailable" for t in node.targets
            ):
                message = node.value
            for part in ast.walk(message) if message is not None else ():
                if isinstance(part, ast.Constant) and isinstance(part.value, str) and len(part.value.strip()) >= 15:
                    fragments.add(part.value.strip())
    return fragments


def _in_code(pattern: str, *folders: str) -> set[str]:
    found = set()
    for folder in folders:
        for source in (REPO / folder).rglob("*.py"):
            found |= set(re.findall(pattern, source.read_text()))
    return found


def test_troubleshooting_covers_every_error() -> None:
    from runtime_api import errors, session_errors

    page = re.sub(r"\s+", " ", TROUBLESHOOTING.read_text())
    # Every error class of the Lambda APIs that the service raises (a class nothing raises is left out).
    raised = {
        name
        for source in (REPO / "runtime_api").glob("*.py")
        if source.name != "errors.py"
        for name in re.findall(r"\b([A-Z][A-Za-z]+Exception)\b", source.read_text())
    }
    service_errors = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.LambdaServiceError) and name in raised
    }
    session_codes = set(re.findall(r'code = "([A-Z_]+)"', Path(session_errors.__file__).read_text()))
    # The platform's and the bootstrap's error types a caller can get (.Unknown: a runtime's unparseable
    # error type as the service records it, never shown to a caller).
    error_types = _in_code(r'"((?:Runtime|Sandbox|Function)\.[A-Z][A-Za-z]+)', "runtime_api", "bootstrap")
    error_types -= {"Runtime.Unknown", "Function.Unknown"}
    # What an invocation gets when an extension fails (the Extensions API's own 403s go to the extension).
    extension_errors = {"Extension.InitError", "Extension.ExitError", "Extension.TooManyExtensions"}
    assert _in_code(r'f"Extension\.\{wanted\}"', "runtime_api") and _in_code(
        r'"(Extension\.TooManyExtensions)"', "runtime_api"
    )
    log_events = _in_code(r'log\.(?:warning|error|exception)\(\s*"([a-z_]+\.[a-z_.]+)"', "runtime_api", "sandbox")
    wanted = service_errors | session_codes | error_types | extension_errors | log_events
    assert len(service_errors) > 10 and len(session_codes) == 10 and len(error_types) > 10 and len(log_events) > 30
    missing = sorted(name for name in wanted if name not in page)
    assert not missing, f"errors troubleshooting.md does not explain: {missing}"
    messages = _message_fragments(
        "runtime_api/service.py", "runtime_api/runtimes.py", "runtime_api/app.py", "sandbox/docker.py"
    )
    # What the scripts say when they stop (up to the first variable or semicolon).
    for script in (REPO / "scripts").iterdir():
        for said in re.findall(r'echo "(error: [^"]*)"', script.read_text()):
            messages.add(re.split(r"[$;]", said)[0].strip())
    missing = sorted(m for m in messages if re.sub(r"\s+", " ", m) not in page)
    assert not missing, f"messages troubleshooting.md does not quote: {missing}"


# --- development.md: the layout and the test table ------------------------------------------------

DEVELOPMENT = REPO / "docs" / "development.md"


def _layout() -> dict[str, set[str]]:
    """The Layout block: folder → the .py files it lists."""
    (block,) = [b for b in blocks(DEVELOPMENT) if b.lang == NOT_CODE and b.text.startswith("runtime_api/")]
    listed: dict[str, set[str]] = {}
    folder = ""
    for line in block.text.splitlines():
        if re.match(r"[a-z_]+/", line):
            folder = line.split("/")[0]
        elif found := re.match(r"  ([a-z_]+\.py) ", line):
            listed.setdefault(folder, set()).add(found[1])
    return listed


def test_development_layout_names_every_module() -> None:
    listed = _layout()
    for folder in ("runtime_api", "sandbox", "bootstrap"):
        modules = {path.name for path in (REPO / folder).glob("*.py")} - {"__init__.py"}
        assert listed.get(folder, set()) == modules, folder


def test_development_covers_every_test_file() -> None:

    table = sections(DEVELOPMENT)["How the tests work"]
    named = set(re.findall(r"(test_[\w*]+\.py)", table))
    files = {path.name for path in (REPO / "tests").rglob("test_*.py")}
    assert {f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in named)} == set()
    assert {p for p in named if not any(fnmatch.fnmatch(f, p) for f in files)} == set()


# --- links between the pages -----------------------------------------------------------------------


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub makes for a page's headings (code blocks left out)."""
    text = _prose(page)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def test_links_between_pages_resolve() -> None:
    broken = []
    for page in PAGES:
        text = _prose(page)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _prose(page: Path) -> str:
    """The page without its fenced code blocks."""
    return re.sub(r"^ *```.*?^ *```", "", page.read_text(), flags=re.S | re.M)
