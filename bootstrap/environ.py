"""An environment variable that changes at every invocation (`_X_AMZN_TRACE_ID`), set without a leak.

`os.environ[key] = value` calls setenv(3), and glibc's setenv frees no value it replaces (a caller may still
hold what getenv returned): it keeps every distinct string it was given. A trace id per invocation is about
140 bytes a warm environment never gets back, 14 MB per 100,000 invocations, until its memory limit kills
it (docs/performance.md, "Memory and many environments"). putenv(3) instead makes the caller's own string
the variable, so one buffer per variable, rewritten in place at each change, carries every value: Python
code sees it in `os.environ`, C code and subprocesses started without `env=` in the process environment, as
with `os.environ[key] = value`. The buffer is put again only when the environment may no longer point at it:
it had to grow, or `os.environ` holds another value than the last one set here (the function set or
removed the variable through `os.environ`). A function that calls `os.putenv` or `os.unsetenv` for the
variable itself, bypassing `os.environ`, keeps its own C-level value until it sets it through `os.environ`.

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


class _Variable:
    """The buffer the process environment points at for a variable, and the value `os.environ` got."""

    __slots__ = ("buffer", "value")

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer  # never freed while the environment may point at it
        self.value = b""


_variables: dict[str, _Variable] = {}


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
    name, encoded = environ.encodekey(key), environ.encodevalue(value)
    entry = name + b"=" + encoded
    variable = _variables.get(key)
    if variable is None or len(variable.buffer) <= len(entry):
        variable = _Variable(ctypes.create_string_buffer(max(256, 2 * len(entry))))
    elif len(variable.value) > 1 and environ._data.get(name) is variable.value:
        # Still ours, so the environment points at the buffer. (Bytes of length 0 and 1 are shared objects:
        # another setting of the same short value would look the same.)
        variable.buffer.value = entry
        environ._data[name] = variable.value = encoded
        return
    variable.buffer.value = entry
    if _putenv(variable.buffer) != 0:
        os.environ[key] = value
        return
    _variables[key] = variable  # a replaced, smaller buffer is freed only now that the environment points here
    environ._data[name] = variable.value = encoded
