"""What the function's output looks like: stdio set-up, the root logger's handler, error records.

- stdout/stderr are made unbuffered, so output reaches the pipe as it is written.
- The root logger gets one handler writing to the current `sys.stdout`, in Text format
  (`[LEVEL]\\t<UTC time>.<ms>Z\\t<request id>\\t<message>\\n`) or, with AWS_LAMBDA_LOG_FORMAT=JSON,
  one JSON object per line. AWS_LAMBDA_LOG_LEVEL sets the root level (TRACE means DEBUG). The
  handler (module `loghandler`) is installed as `logging` is first imported, so that a function
  that never logs does not pay for importing it at start.
- An error reported to the Runtime API is also written to stdout: one `\\r`-joined record in Text
  mode, one JSON object with `log_level` in JSON mode.
"""

from __future__ import annotations

import io
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

    from .marshalling import JsonCodec

UNHANDLED_EXCEPTION_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function code. "
    "However, in rare cases, a Lambda runtime update can cause unexpected function behavior. "
    "For functions using managed runtimes, runtime updates can be triggered by a function change, "
    "or can be applied automatically. To determine if the runtime has been updated, check the runtime "
    "version in the INIT_START log entry. If this error correlates with a change in the runtime version, "
    "you may be able to mitigate this error by temporarily rolling back to the previous runtime version. "
    "For more information, see https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html"
)

TEXT_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
TEXT_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
JSON_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_NO_BREAK_SPACE = "\u00a0"
# logging's level names (logging._nameToLevel), known here without importing it.
_LEVEL_NAMES = frozenset(("CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET"))
_STDLIB = [os.path.dirname(os.__file__)] if getattr(os, "__file__", None) else None


class _Invocation:
    """The invocation in progress, as seen by log records (from any thread)."""

    request_id = ""
    tenant_id: str | None = None


def set_invocation(request_id: str, tenant_id: str | None) -> None:
    _Invocation.request_id = request_id
    _Invocation.tenant_id = tenant_id


def log_level_from_env(value: str | None) -> str:
    """The root logger level named by AWS_LAMBDA_LOG_LEVEL, or "" to leave Python's default."""
    name = (value or "").upper()
    if name == "TRACE":
        name = "DEBUG"
    return name if name in _LEVEL_NAMES else ""


def setup_logging(json_format: bool, level: str) -> logging.Handler | None:
    """Give the root logger our handler: now if `logging` is imported already (the handler is
    returned), otherwise right after the first `import logging`, before that import returns.

    A function that never logs then never pays for importing `logging`; one that does sees the same
    root logger as if the runtime had set it up at start (so `logging.basicConfig` does nothing, as
    in Lambda).
    """
    if "logging" in sys.modules:
        from .loghandler import install

        return install(json_format, level)
    sys.meta_path.insert(0, _SetUpOnImport(json_format, level))
    return None


class _SetUpOnImport:
    """A meta path finder for `logging` alone: it finds the standard library's `logging` (not a
    `logging.py` in the task root, which would not be reached on Lambda either, the runtime having
    imported `logging` first) and installs our handler once the module has run."""

    def __init__(self, json_format: bool, level: str) -> None:
        self.json_format = json_format
        self.level = level
        self.done = False

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name != "logging" or self.done:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, _STDLIB) or PathFinder.find_spec(name)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _ThenSetUp(spec.loader, self)  # type: ignore[assignment]
        return spec

    def set_up(self) -> None:
        if self.done:
            return
        self.done = True
        if self in sys.meta_path:  # unless the function replaced sys.meta_path
            sys.meta_path.remove(self)
        from .loghandler import install

        install(self.json_format, self.level)


class _ThenSetUp:
    """Loads a module with `loader`, then calls `finder.set_up()`. The module ends up with the real
    loader as its `__loader__` and `__spec__.loader`, as if imported without the hook."""

    def __init__(self, loader: Loader, finder: _SetUpOnImport) -> None:
        self.loader = loader
        self.finder = finder

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        loader = self.loader
        module.__loader__ = loader
        if module.__spec__ is not None:
            module.__spec__.loader = loader
        loader.exec_module(module)
        self.finder.set_up()


def format_error_text(error: dict[str, Any]) -> str:
    description = "[ERROR]"
    if error.get("errorType"):
        description += " " + error["errorType"]
    if error.get("errorMessage"):
        if error.get("errorType"):
            description += ":"
        description += " " + error["errorMessage"]
    lines = [description]
    stack_trace = error.get("stackTrace")
    if stack_trace is not None:
        lines.append("Traceback (most recent call last):")
        for entry in stack_trace:
            if entry == "":
                lines.append("")
            else:
                lines.extend(_indent_with_no_break_spaces(line) for line in entry.splitlines())
    return "\r".join(lines) + "\n"


def format_error_json(error: dict[str, Any], codec: JsonCodec) -> str:
    record = {"timestamp": time.strftime(JSON_DATE_FORMAT, time.gmtime()), "log_level": "ERROR", **error}
    return codec.dumps(record) + "\n"


def write_error(error: dict[str, Any], json_format: bool, codec: JsonCodec) -> None:
    sys.stdout.write(format_error_json(error, codec) if json_format else format_error_text(error))


def unbuffer_stdio() -> None:
    """Replace sys.stdout/sys.stderr with write-through streams on the same fds (what `python -u` does)."""
    sys.stdout = _unbuffered(sys.stdout)
    sys.stderr = _unbuffered(sys.stderr)


def flush_stdio() -> None:
    """Push everything the function printed into the pipes (before its result is posted)."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def _unbuffered(stream: Any) -> Any:
    try:
        stream.flush()
        raw = io.FileIO(stream.fileno(), "w", closefd=False)
        encoding, errors = stream.encoding, stream.errors
    except (AttributeError, OSError, ValueError):
        return stream
    return io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="\n", write_through=True)


def _indent_with_no_break_spaces(line: str) -> str:
    stripped = line.lstrip(" ")
    return _NO_BREAK_SPACE * (len(line) - len(stripped)) + stripped
