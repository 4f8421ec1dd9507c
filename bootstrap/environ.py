"""An environment variable that changes at every invocation (`_X_AMZN_TRACE_ID`), set without a leak.

`os.environ[key] = value` calls setenv(3), and glibc's setenv frees no value it replaces (a caller may still
hold what getenv returned): it keeps every distinct string it was given. A trace id per invocation is about
140 bytes a warm environment never gets back, 14 MB per 100,000 invocations, until its memory limit kills
it (docs/performance.md, "Memory and many environments"). putenv(3) instead makes the caller's own string
the variable, so one buffer per variable, rewritten in place and put again at each change, carries every
value: Python code sees it in `os.environ`, C code and subprocesses started without `env=` in the process
environment, as with `os.environ[key] = value`.

ctypes is imported with this module, at the runtime's start (0.36 MB, 1-4 ms here): a generic sandbox's
preload does it before any function is known, and no invocation waits for it. (Imported later, after the
first answer, it delayed the second invocation: the service may hold that answer until the next event.)
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    import ctypes

    _putenv: Any = ctypes.CDLL(None).putenv
except (ImportError, OSError, AttributeError):  # no ctypes or no C library: os.environ it is
    _putenv = None
_buffers: dict[str, Any] = {}  # key -> the ctypes buffer the process environment points to; never freed early


def set_variable(key: str, value: str | None) -> None:
    """`os.environ[key] = value` (or `del`, for None) that keeps no copy of values replaced."""
    if value is None:
        os.environ.pop(key, None)  # unsetenv drops the pointer; the buffer stays ours for the next value
        return
    if _putenv is None or "\0" in value or not isinstance(os.environ, os._Environ):
        # Without putenv; or as it always did, refusing a NUL; or in an os.environ the function replaced.
        os.environ[key] = value
        return
    environ: Any = os.environ
    entry = environ.encodekey(key) + b"=" + environ.encodevalue(value)
    buffer = _buffers.get(key)
    if buffer is None or len(buffer) <= len(entry):
        buffer = ctypes.create_string_buffer(max(256, 2 * len(entry)))
    buffer.value = entry
    if _putenv(buffer) != 0:
        os.environ[key] = value
        return
    _buffers[key] = buffer  # a replaced, smaller buffer is freed only now that the environment points here
    environ._data[environ.encodekey(key)] = environ.encodevalue(value)
