"""bootstrap/environ.py: the trace id variable, changed at every invocation, without glibc's setenv leak."""

from __future__ import annotations

import ctypes
import os
import subprocess
import uuid

import pytest

from bootstrap.environ import set_variable

KEY = "_X_AMZN_TRACE_ID"


@pytest.fixture(autouse=True)
def _restore() -> None:
    yield
    set_variable(KEY, None)


def _c_getenv(key: str) -> bytes | None:
    getenv = ctypes.CDLL(None).getenv
    getenv.restype = ctypes.c_char_p
    return getenv(key.encode())


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _trace_id() -> str:
    return f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"


def test_python_c_and_subprocesses_see_each_value_and_its_removal() -> None:
    for value in ("Root=1-abc", "x" * 1000, "Root=1-short"):
        set_variable(KEY, value)
        assert os.environ[KEY] == os.getenv(KEY) == value
        assert _c_getenv(KEY) == value.encode()
        assert subprocess.run(["sh", "-c", f"printf %s ${KEY}"], capture_output=True, text=True).stdout == value
    os.environ[KEY] = "set by the function"  # setenv points the variable elsewhere: the next value still wins
    set_variable(KEY, "Root=1-next")
    assert _c_getenv(KEY) == b"Root=1-next" and os.environ[KEY] == "Root=1-next"
    set_variable(KEY, None)
    assert KEY not in os.environ and _c_getenv(KEY) is None


@pytest.mark.parametrize("how", ["set", "del", "same value", "short values"])
def test_a_value_the_function_set_through_os_environ_is_replaced_by_the_next(how: str) -> None:
    first = "x" if how == "short values" else "Root=1-first"
    set_variable(KEY, first)
    if how == "del":
        del os.environ[KEY]
    else:
        os.environ[KEY] = first if how in ("same value", "short values") else "set by the function"
    assert _c_getenv(KEY) != b"Root=1-next"
    set_variable(KEY, "Root=1-next")
    assert _c_getenv(KEY) == b"Root=1-next" and os.environ[KEY] == "Root=1-next"
    assert subprocess.run(["sh", "-c", f"printf %s ${KEY}"], capture_output=True, text=True).stdout == "Root=1-next"


def test_the_buffer_is_put_once_and_rewritten_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    from bootstrap import environ

    put = []
    real = environ._putenv
    monkeypatch.setattr(environ, "_putenv", lambda buffer: put.append(buffer) or real(buffer))
    for index in range(5):
        set_variable(KEY, f"Root=1-{index}")
        assert _c_getenv(KEY) == f"Root=1-{index}".encode() and os.environ[KEY] == f"Root=1-{index}"
    set_variable(KEY, "y" * 10000)  # larger than the buffer: a new one
    assert _c_getenv(KEY) == b"y" * 10000
    assert len(put) == 2 and put[1] is not put[0]  # the first value (the variable was removed), and the larger


def test_distinct_values_leave_nothing_behind() -> None:
    """os.environ[KEY] = value keeps every distinct value (about 140 bytes each, 2.8 MB for these 20,000)."""
    set_variable(KEY, _trace_id())
    values = [_trace_id() for _ in range(20000)]
    before = _rss_kb()
    for value in values:
        set_variable(KEY, value)
    assert _rss_kb() - before < 512


def test_a_replaced_os_environ_gets_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    replaced: dict[str, str] = {}
    monkeypatch.setattr(os, "environ", replaced)
    set_variable(KEY, "Root=1-abc")
    assert replaced == {KEY: "Root=1-abc"}
