"""bootstrap.logs: the root logger's Text and JSON formats, log levels, request ids."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from bootstrap.loghandler import JsonFormatter
from bootstrap.logs import log_level_from_env, set_invocation, setup_logging

CREATED = 1714564800.123456  # 2024-05-01T12:00:00.123Z


@pytest.fixture
def root_logger():
    """Set-up is global (root logger, Formatter.converter): put everything back afterwards."""
    root = logging.getLogger()
    handlers, level, converter = root.handlers[:], root.level, logging.Formatter.converter
    root.handlers = []
    root.setLevel(logging.WARNING)
    yield root
    root.handlers, logging.Formatter.converter = handlers, converter
    root.setLevel(level)
    set_invocation("", None)


def _record(level: int = logging.INFO, msg: str = "hello %s", args: tuple = ("world",), **extra: object):
    record = logging.LogRecord("app.module", level, "/var/task/app.py", 7, msg, args, None, func="handler")
    record.created, record.msecs = CREATED, 123.0
    record.__dict__.update(extra)
    return record


def _emit(handler: logging.Handler, record: logging.LogRecord) -> None:
    handler.handle(record)  # runs the handler's filters, as logging does


def test_text_format(root_logger, capsys: pytest.CaptureFixture[str]) -> None:
    handler = setup_logging(json_format=False, level="")
    set_invocation("req-1", None)
    _emit(handler, _record())
    assert capsys.readouterr().out == "[INFO]\t2024-05-01T12:00:00.123Z\treq-1\thello world\n"


def test_text_format_through_the_root_logger(root_logger, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(json_format=False, level="INFO")
    set_invocation("req-2", None)
    logging.getLogger("x").info("first")
    set_invocation("req-3", None)
    logging.warning("second")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[::2] for line in lines] == [["[INFO]", "req-2"], ["[WARNING]", "req-3"]]
    assert [line.split("\t")[3] for line in lines] == ["first", "second"]


def test_default_level_is_warning(root_logger, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(json_format=False, level="")
    logging.info("hidden")
    logging.warning("shown")
    out = capsys.readouterr().out
    assert "hidden" not in out and "shown" in out
    assert out.startswith("[WARNING]\t") and "\t\tshown" in out  # empty request id before any invocation


def test_basic_config_is_a_no_op_once_set_up(root_logger, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(json_format=False, level="INFO")
    logging.basicConfig(format="%(message)s", stream=sys.stdout)
    logging.info("x")
    assert capsys.readouterr().out.startswith("[INFO]\t")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        ("", ""),
        ("TRACE", "DEBUG"),
        ("trace", "DEBUG"),
        ("debug", "DEBUG"),
        ("INFO", "INFO"),
        ("WARN", "WARN"),
        ("error", "ERROR"),
        ("FATAL", "FATAL"),
        ("verbose", ""),
    ],
)
def test_log_level_from_env(value: str | None, expected: str) -> None:
    assert log_level_from_env(value) == expected


def test_level_is_applied(root_logger) -> None:
    setup_logging(json_format=False, level="ERROR")
    assert root_logger.level == logging.ERROR


def test_json_format(root_logger, capsys: pytest.CaptureFixture[str]) -> None:
    handler = setup_logging(json_format=True, level="")
    set_invocation("req-1", None)
    _emit(handler, _record())
    out = capsys.readouterr().out
    assert out.endswith("}\n") and out.count("\n") == 1
    assert json.loads(out) == {
        "timestamp": "2024-05-01T12:00:00Z",
        "level": "INFO",
        "message": "hello world",
        "logger": "app.module",
        "requestId": "req-1",
    }
    assert list(json.loads(out)) == ["timestamp", "level", "message", "logger", "requestId"]


def test_json_format_with_exception_tenant_and_extras(root_logger, capsys: pytest.CaptureFixture[str]) -> None:
    handler = setup_logging(json_format=True, level="")
    set_invocation("req-1", "tenant-9")
    try:
        raise ValueError("bad ✓")
    except ValueError:
        record = _record(logging.ERROR, "failed", (), order_id=42, dropped=None)
        record.exc_info = sys.exc_info()
    _emit(handler, record)
    out = capsys.readouterr().out
    assert "✓" in out  # JSON log lines keep non-ASCII text as is
    line = json.loads(out)
    assert list(line) == [
        "timestamp",
        "level",
        "message",
        "logger",
        "stackTrace",
        "errorType",
        "errorMessage",
        "requestId",
        "location",
        "tenantId",
        "order_id",
    ]
    assert line["errorType"] == "ValueError"
    assert line["errorMessage"] == "bad ✓"
    assert line["location"] == "/var/task/app.py:handler:7"
    assert line["stackTrace"][0].startswith('  File "')
    assert line["order_id"] == 42


def test_json_levels_round_down_to_multiples_of_ten() -> None:
    formatter = JsonFormatter()
    assert json.loads(formatter.format(_record(level=25)))["level"] == "INFO"
    assert json.loads(formatter.format(_record(level=5)))["level"] == "NOTSET"
    assert json.loads(formatter.format(_record(level=70)))["level"] == "CRITICAL"


def test_json_unserialisable_extra_is_stringified() -> None:
    line = json.loads(JsonFormatter().format(_record(thing={1})))
    assert line["thing"] == "{1}"
