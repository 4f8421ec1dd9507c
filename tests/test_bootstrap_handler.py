"""bootstrap.handler: every row of awslambdaric's handler resolution table, and handler arity."""

from __future__ import annotations

import functools
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from bootstrap.errors import FaultError, error_from_exception
from bootstrap.handler import load_handler, resolve_handler, takes_context


@pytest.fixture
def task_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A temporary task root on sys.path; modules imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _module(root: Path, source: str, relpath: str | None = None) -> tuple[str, Path]:
    """Write a uniquely named module; returns its dotted name and path."""
    name = relpath or f"mod_{uuid.uuid4().hex[:12]}"
    path = root / (name.replace(".", "/") + ".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return name, path


def _fault(name: str) -> FaultError:
    with pytest.raises(FaultError) as info:
        resolve_handler(name)
    return info.value


def test_resolves_module_function(task_root: Path) -> None:
    name, _ = _module(task_root, "def handler(event, context):\n    return 'ok'\n")
    assert resolve_handler(f"{name}.handler")({}, None) == "ok"


def test_splits_on_the_last_dot(task_root: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    _module(task_root, "def fn(event, context):\n    return 'deep'\n", f"pkg_{suffix}.sub.app")
    assert resolve_handler(f"pkg_{suffix}.sub.app.fn")({}, None) == "deep"


def test_slashes_in_module_part_become_dots(task_root: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    _module(task_root, "def fn(event, context):\n    return 'slash'\n", f"dir_{suffix}.mod")
    assert resolve_handler(f"dir_{suffix}/mod.fn")({}, None) == "slash"


def test_no_dot_is_malformed_handler_name() -> None:
    fault = _fault("nodot")
    assert fault.error_type == "Runtime.MalformedHandlerName"
    assert fault.message == "Bad handler 'nodot': not enough values to unpack (expected 2, got 1)"
    assert fault.payload() == {
        "errorMessage": "Bad handler 'nodot': not enough values to unpack (expected 2, got 1)",
        "errorType": "Runtime.MalformedHandlerName",
        "requestId": "",
        "stackTrace": [],
    }


def test_empty_handler_is_malformed() -> None:
    assert _fault("").message == "Bad handler '': not enough values to unpack (expected 2, got 1)"


def test_built_in_module_conflict() -> None:
    fault = _fault("sys.h")
    assert fault.error_type == "Runtime.BuiltInModuleConflict"
    assert fault.message == "Cannot use built-in module sys as a handler module"


def test_missing_module_is_import_module_error(task_root: Path) -> None:
    fault = _fault("no_such_module_xyz.handler")
    assert fault.error_type == "Runtime.ImportModuleError"
    assert fault.message == "Unable to import module 'no_such_module_xyz': No module named 'no_such_module_xyz'"
    assert fault.payload()["stackTrace"] == []


def test_missing_dependency_is_import_module_error(task_root: Path) -> None:
    name, _ = _module(task_root, "import not_installed_dep_xyz\n\ndef handler(e, c):\n    pass\n")
    fault = _fault(f"{name}.handler")
    assert fault.error_type == "Runtime.ImportModuleError"
    assert fault.message == f"Unable to import module '{name}': No module named 'not_installed_dep_xyz'"


def test_syntax_error_is_user_code_syntax_error(task_root: Path) -> None:
    source = "def handler(event, context:\n    return 1\n"
    name, path = _module(task_root, source)
    with pytest.raises(SyntaxError) as expected:
        compile(source, str(path), "exec")
    fault = _fault(f"{name}.handler")
    assert fault.error_type == "Runtime.UserCodeSyntaxError"
    assert fault.message == f"Syntax error in module '{name}': {expected.value}"
    lineno, text = expected.value.lineno, expected.value.text
    assert fault.stack_trace == [f'  File "{path}" Line {lineno}\n    {text}']


def test_missing_attribute_is_handler_not_found(task_root: Path) -> None:
    name, _ = _module(task_root, "def other(event, context):\n    pass\n")
    fault = _fault(f"{name}.handler")
    assert fault.error_type == "Runtime.HandlerNotFound"
    assert fault.message == f"Handler 'handler' missing on module '{name}'"
    assert fault.payload()["stackTrace"] == []


def test_other_import_time_exception_keeps_its_class_name(task_root: Path) -> None:
    name, path = _module(task_root, "X = 1\nraise ValueError('bad config')\n")
    with pytest.raises(ValueError) as info:
        load_handler(f"{name}.handler")
    error = error_from_exception(info.value)
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad config"
    assert error["requestId"] == ""
    assert error["stackTrace"][-1] == f"  File \"{path}\", line 2, in <module>\n    raise ValueError('bad config')\n"
    assert any("importlib" in entry for entry in error["stackTrace"])  # Python's import machinery stays


# -- one-parameter handlers ---------------------------------------------------------------------


def _one(event):  # type: ignore[no-untyped-def]
    return event


def _two(event, context):  # type: ignore[no-untyped-def]
    return event


class _Handlers:
    def method_one(self, event):  # type: ignore[no-untyped-def]
        return event

    def method_two(self, event, context):  # type: ignore[no-untyped-def]
        return event

    def __call__(self, event):  # type: ignore[no-untyped-def]
        return event


def _forwarding_decorator(func):  # type: ignore[no-untyped-def]
    @functools.wraps(func)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        return func(*args, **kwargs)

    return wrapper


def _context_decorator(func):  # type: ignore[no-untyped-def]
    @functools.wraps(func)
    def wrapper(event, context):  # type: ignore[no-untyped-def]
        return func(event)

    return wrapper


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (_one, False),
        (_two, True),
        (lambda event: event, False),
        (lambda event, context=None: event, True),
        (lambda event=None: event, False),
        (lambda *args: args, True),
        (lambda event, *args: event, True),
        (lambda event, *, flag=False: event, False),
        (lambda: None, True),  # fails at call time, as in awslambdaric
        (_Handlers().method_one, False),
        (_Handlers().method_two, True),
        (_Handlers(), False),
        (functools.partial(_two, {}), False),
        (_forwarding_decorator(_one), True),  # the wrapper forwards whatever it gets
        (_context_decorator(_one), True),  # judged by the wrapper, not by __wrapped__
        (max, True),  # no signature: both arguments
        (len, False),
    ],
)
def test_takes_context(handler, expected: bool) -> None:  # type: ignore[no-untyped-def]
    assert takes_context(handler) is expected


def test_load_handler_records_arity(task_root: Path) -> None:
    name, _ = _module(task_root, "def handler(event):\n    return event\n")
    loaded = load_handler(f"{name}.handler")
    assert loaded.takes_context is False
    assert loaded.function({"a": 1}) == {"a": 1}
