"""One execute_code of an agent session: code that defines `handler` is called with the event; any
other code runs as a script, as `python FILE ARGS...` would run it.

Started by the session agent (cwd /workspace) as
`python3 -c "import sys; sys.path.insert(0, '/var/runtime'); from sandbox_bootstrap.session_runner import main;
del sys.path[0]; main()" FILE [ARGS...]`, with _SANDBOX_RUNNER_FDS="EVENT_FD,OUTCOME_FD": the event to read
(JSON) and where to write the outcome (JSON): `{"mode": "handler", "result": ...}`, `{"mode": "handler", "error":
{"errorType", "errorMessage", "stackTrace"}}` (Lambda's error document), `{"mode": "script"}`, or
`{"invalid_code": "SyntaxError: ...", "error": {...}}`.

Handler or script is decided from the code itself: a `handler` defined (def, async def, assignment or
import) at the top level makes it a handler. A handler module is imported under its file's name, so
an `if __name__ == "__main__":` block in it does not run; a script runs as `__main__` with `sys.argv`
set to the file and its args. `handler(event)` or `handler(event, context)` is called according to
its signature; a coroutine is run to its end. Tracebacks are printed without this file's frames.
Standard library only, and as few imports as possible before the user's code runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_RESULT_LIMIT = 6 * 1024 * 1024  # as a Lambda response
_CO_VARARGS = 0x04


class SessionContext:
    """What a `handler(event, context)` gets: the Lambda context's common members."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.aws_request_id = str(info.get("execution_id", ""))
        self.session_id = str(info.get("session_id", ""))
        self.function_name = "session"
        self.function_version = "$LATEST"
        self.invoked_function_arn = ""
        self.memory_limit_in_mb = str(info.get("memory_limit_mb") or "")  # a string, as in Lambda
        self.log_group_name = f"/sandbox-runtime/sessions/{self.session_id}"
        self.log_stream_name = self.aws_request_id
        self._deadline = float(info.get("deadline") or 0)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _defines_handler(tree: Any) -> bool:
    import ast

    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == "handler":
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "handler" for t in targets):
                return True
        if isinstance(node, ast.Import | ast.ImportFrom) and any(
            (alias.asname or alias.name) == "handler" for alias in node.names
        ):
            return True
    return False


def _takes_context(handler: Any) -> bool:
    code = getattr(handler, "__code__", None)
    if code is not None:
        count = code.co_argcount - (1 if getattr(handler, "__self__", None) is not None else 0)
        return bool(code.co_flags & _CO_VARARGS) or count >= 2
    import inspect

    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return any(p.kind is p.VAR_POSITIONAL for p in parameters) or len(positional) >= 2


def _user_traceback(exc: BaseException) -> Any:
    """The exception's traceback from the user's first frame on (this file's frames left out)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


def _print_exception(exc: BaseException) -> None:
    """The traceback as Python prints it, from the user's first frame on."""
    import traceback

    traceback.print_exception(type(exc), exc, _user_traceback(exc))
    sys.stderr.flush()


def _error_document(exc: BaseException) -> dict[str, Any]:
    """The exception as Lambda reports a handler's: errorType, errorMessage, stackTrace."""
    import traceback

    message = str(exc) if not isinstance(exc, SyntaxError) else f"{exc.msg} ({exc.filename}, line {exc.lineno})"
    return {
        "errorType": type(exc).__name__,
        "errorMessage": message,
        "stackTrace": traceback.format_tb(_user_traceback(exc)),
    }


def _write(fd: int, outcome: dict[str, Any]) -> None:
    view = memoryview(json.dumps(outcome, ensure_ascii=False).encode("utf-8", "replace"))
    while view:
        view = view[os.write(fd, view) :]


def _read_event(fd: int) -> Any:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    data = b"".join(chunks)
    return json.loads(data) if data else None


def _module_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem if stem.isidentifier() else "main"


def main() -> None:
    event_fd, outcome_fd = (int(fd) for fd in os.environ.pop("_SANDBOX_RUNNER_FDS").split(","))
    context = json.loads(os.environ.pop("_SANDBOX_RUNNER_CONTEXT", "{}") or "{}")
    os.set_inheritable(event_fd, False)  # not for what the user's code starts
    os.set_inheritable(outcome_fd, False)
    path, args = sys.argv[1], sys.argv[2:]
    sys.argv = [path, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(path))  # as `python FILE` would have it
    with open(path, "rb") as source_file:
        source = source_file.read()
    try:
        import ast

        tree = ast.parse(source, path)
        code = compile(tree, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        _write(outcome_fd, {"invalid_code": f"{type(exc).__name__}: {exc}", "error": _error_document(exc)})
        _print_exception(exc)
        sys.exit(1)
    if not _defines_handler(tree):
        os.close(event_fd)
        _write(outcome_fd, {"mode": "script"})
        os.close(outcome_fd)
        module = types.ModuleType("__main__")
        module.__file__ = path
        sys.modules["__main__"] = module
        try:
            exec(code, module.__dict__)
        except SystemExit:
            raise
        except BaseException as exc:
            _print_exception(exc)
            sys.exit(1)
        return
    sys.exit(_run_handler(code, path, event_fd, outcome_fd, context))


def call_handler(namespace: dict[str, Any], event: Any, context: dict[str, Any]) -> tuple[Any, str]:
    """Call the code's `handler` with the event (and a context, when it takes one), awaiting a coroutine's
    result; the result and its JSON, checked: serializable and at most _RESULT_LIMIT long."""
    handler = namespace.get("handler")
    if not callable(handler):
        raise TypeError(f"handler is not callable: {type(handler).__name__}")
    result = handler(event, SessionContext(context)) if _takes_context(handler) else handler(event)
    if isinstance(result, types.CoroutineType):
        import asyncio

        result = asyncio.run(result)
    try:
        payload = json.dumps(result, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the handler's result is not JSON serializable: {exc}") from None
    if len(payload) > _RESULT_LIMIT:
        raise ValueError(f"the handler's result is too large: {len(payload)} bytes (at most {_RESULT_LIMIT})")
    return result, payload


def _run_handler(code: types.CodeType, path: str, event_fd: int, outcome_fd: int, context: dict[str, Any]) -> int:
    name = _module_name(path)
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
        _, payload = call_handler(module.__dict__, _read_event(event_fd), context)
    except SystemExit as exc:
        _write(outcome_fd, {"mode": "handler", "error": _error_document(exc)})
        raise
    except BaseException as exc:
        _print_exception(exc)
        _write(outcome_fd, {"mode": "handler", "error": _error_document(exc)})
        return 1
    sys.stdout.flush()
    view = memoryview(f'{{"mode":"handler","result":{payload}}}'.encode("utf-8", "replace"))
    while view:
        view = view[os.write(outcome_fd, view) :]
    return 0


if __name__ == "__main__":
    main()
