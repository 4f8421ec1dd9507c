"""An environment variable that changes at every invocation (`_X_AMZN_TRACE_ID`), set without a leak.

`os.environ[key] = value` calls setenv(3), and glibc's setenv frees no value it replaces (a caller may still
hold what getenv returned): it keeps every distinct string it was given. A trace id per invocation is about
140 bytes a warm environment never gets back, 14 MB per 100,000 invocations, until its memory limit kills
it (docs/performance.md, "Memory and many environments"). putenv(3) instead makes the caller's own string
the variable, so one buffer per variable, rewritten in place and put again at each change, carries every
value: Python code sees it in `os.environ`, C code and subprocesses started without `env=` in the process
environment, as with `os.environ[key] = value`.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_buffers: dict[str, Any] = {}  # key -> the ctypes buffer the process environment points to; never freed early
_putenv: Any = None


def set_variable(key: str, value: str | None) -> None:
    """`os.environ[key] = value` (or `del`, for None) that keeps no copy of values replaced."""
    if value is None:
        os.environ.pop(key, None)  # unsetenv drops the pointer; the buffer stays ours for the next value
        return
    if _putenv is None:
        # Until `load` has run, values go through setenv (one string kept each): a cold start's invocation does
        # not wait for ctypes' import (1-4 ms here), done once its answer is out.
        os.environ[key] = value
        return
    putenv = _putenv
    if putenv is False or "\0" in value:
        os.environ[key] = value  # (which refuses a NUL as it always did)
        return
    if not isinstance(os.environ, os._Environ):  # the function replaced os.environ: it gets the value as before
        os.environ[key] = value
        return
    environ: Any = os.environ
    entry = environ.encodekey(key) + b"=" + environ.encodevalue(value)
    buffer = _buffers.get(key)
    if buffer is None or len(buffer) <= len(entry):
        import ctypes

        buffer = ctypes.create_string_buffer(max(256, 2 * len(entry)))
    buffer.value = entry
    if putenv(buffer) != 0:
        os.environ[key] = value
        return
    _buffers[key] = buffer  # a replaced, smaller buffer is freed only now that the environment points here
    environ._data[environ.encodekey(key)] = environ.encodevalue(value)


def load() -> None:
    """Get putenv ready (import ctypes) for the values to come: called once an invocation has been answered,
    where it delays no one's answer (at most, once, an invocation already waiting for this runtime)."""
    if _putenv is None:
        _load_putenv()


def _load_putenv() -> Any:
    """libc's putenv, or False where ctypes or a C library is unavailable (then os.environ is used)."""
    global _putenv
    try:
        import ctypes

        _putenv = ctypes.CDLL(None).putenv
    except (ImportError, OSError, AttributeError):
        _putenv = False
    return _putenv
