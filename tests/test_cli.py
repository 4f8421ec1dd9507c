"""The `sandbox-runtime` command (and `python -m runtime_api`), run as real subprocesses.

`invoke` runs one function without a server: the result on stdout, START/END/REPORT and the function's
output on stderr. `serve` is the default command. Template and configuration errors stop the start
with a message and a non-zero exit; settings come from flags, then SANDBOX_* variables, then defaults.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import (
    BUNDLED_TEMPLATE,
    REPO,
    ServiceProcess,
    assert_no_sandbox_left,
    claim_uid_range,
    free_port,
    sandbox_processes,
)
from support import Result

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cli"
FALLBACK_TEMPLATE = FIXTURES / "fallback.yaml"
WARNING_TEMPLATE = FIXTURES / "with-warning.yaml"  # the bundled functions plus a resource we skip, with a warning
SANDBOX_RUNTIME = [str(REPO / ".venv" / "bin" / "sandbox-runtime")]
PYTHON_M = [sys.executable, "-m", "runtime_api"]
BUNDLED_FUNCTIONS = {
    "hello": "HelloFunction",
    "echo": "EchoFunction",
    "api": "ApiFunction",
    "error": "ErrorFunction",
    "timeout": "TimeoutFunction",
}
MISSING_INTERPRETER = "python3.99"  # no host has it; python3.11 is the only python3.x under /usr/bin here


def clean_environ(uid_range: tuple[int, int], extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any SANDBOX_* setting, plus our uid block and `extra`."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SANDBOX_")}
    environment["SANDBOX_UID_RANGE"] = f"{uid_range[0]}-{uid_range[1]}"
    environment.update(extra or {})
    return environment


class Pending:
    """A command started from the repository root; `result()` waits for it and checks for leftover sandboxes."""

    def __init__(
        self, command: list[str], args: tuple[str | Path, ...], env: dict[str, str] | None, stdin: str | None
    ) -> None:
        self.argv = [*command, *map(str, args)]
        self.uid_range = claim_uid_range()
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_environ(self.uid_range, env),
            cwd=REPO,
        )
        self.stdin = (stdin or "").encode()

    def result(self, timeout: float = 60) -> Result:
        try:
            out, err = self.process.communicate(self.stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            raise AssertionError(
                f"{self.argv} did not finish in {timeout}s\n{Result(-9, out.decode(), err.decode())}"
            ) from None
        assert_no_sandbox_left(self.uid_range, "the command")
        return Result(self.process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def start(
    command: list[str], *args: str | Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> Pending:
    """Start a command without waiting: tests with several independent commands run them side by side."""
    return Pending(command, args, env, stdin)


def run(command: list[str], *args: str | Path, timeout: float = 60, **kwargs) -> Result:
    return start(command, *args, **kwargs).result(timeout)


def invoke(*args: str | Path, command: list[str] = SANDBOX_RUNTIME, **kwargs) -> Result:
    return run(command, "invoke", *args, **kwargs)


def start_invoke(*args: str | Path, command: list[str] = SANDBOX_RUNTIME, **kwargs) -> Pending:
    return start(command, "invoke", *args, **kwargs)


def only_json(stdout: str) -> object:
    """stdout holds exactly one JSON document and nothing else."""
    lines = stdout.splitlines()
    assert len(lines) == 1, f"expected one line of JSON on stdout, got {stdout!r}"
    return json.loads(lines[0])


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.search(r"\bwarning\b", line, re.IGNORECASE)]


def assert_platform_lines(stderr: str, request_id: str, memory_mb: int = 128) -> list[str]:
    lines = stderr.splitlines()
    assert f"START RequestId: {request_id} Version: $LATEST" in lines, stderr
    assert f"END RequestId: {request_id}" in lines, stderr
    reports = [line for line in lines if line.startswith(f"REPORT RequestId: {request_id}\t")]
    assert len(reports) == 1, stderr
    assert "\tDuration: " in reports[0] and f"\tMemory Size: {memory_mb} MB\t" in reports[0], reports[0]
    start = lines.index(f"START RequestId: {request_id} Version: $LATEST")
    end = lines.index(f"END RequestId: {request_id}")
    assert start < end < lines.index(reports[0])
    return lines[start + 1 : end]  # what the function wrote


# -- invoke ------------------------------------------------------------------------------------------


def test_invoke_prints_the_result_on_stdout_and_the_log_on_stderr():
    pending = {
        "sandbox-runtime": start_invoke("hello", "--template", WARNING_TEMPLATE),
        "python -m runtime_api": start_invoke("hello", "--template", WARNING_TEMPLATE, command=PYTHON_M),
    }
    for form, job in pending.items():
        result = job.result()
        assert result.returncode == 0, f"{form}: {result}"
        output = only_json(result.stdout)
        assert isinstance(output, dict) and output["message"] == "Hello, world!", f"{form}: {result}"
        request_id = output["request_id"]
        assert uuid.UUID(request_id).version == 4
        assert assert_platform_lines(result.stderr, request_id) == [], f"{form}: {result}"  # hello prints nothing
        assert "Hello, world!" not in result.stderr, f"{form}: {result}"  # the result goes to stdout only
        assert warning_lines(result.stderr), f"{form}: {result}"  # service warnings show by default


def test_invoke_passes_the_event(tmp_path):
    event = {"name": "Ada", "nested": {"ü": [1, 2.5, None]}}
    (tmp_path / "event.json").write_text(json.dumps(event))
    pending = {
        # Also: --template beats SANDBOX_TEMPLATE, and SANDBOX_TEMPLATE serves when no flag is given.
        "-e FILE, --template over SANDBOX_TEMPLATE": start_invoke(
            "hello",
            "--template",
            "template.yaml",
            "-e",
            tmp_path / "event.json",
            env={"SANDBOX_TEMPLATE": "no-such-template.yaml"},
        ),
        "-e -": start_invoke("hello", "--template", "template.yaml", "-e", "-", stdin=json.dumps(event)),
        "logical id, --event -, SANDBOX_TEMPLATE": start_invoke(
            "HelloFunction", "--event", "-", stdin=json.dumps(event), env={"SANDBOX_TEMPLATE": str(BUNDLED_TEMPLATE)}
        ),
    }
    for form, job in pending.items():
        result = job.result()
        assert result.returncode == 0, f"{form}: {result}"
        output = only_json(result.stdout)
        assert output["message"] == "Hello, Ada!", f"{form}: {result}"
        assert_platform_lines(result.stderr, output["request_id"])


def test_invoke_takes_parameter_overrides():
    result = invoke(
        "hello", "--template", "template.yaml", "--parameter-overrides", "Greeting=Bonjour", "-e", "-", stdin="{}"
    )
    assert result.returncode == 0, str(result)
    assert only_json(result.stdout)["message"] == "Bonjour, world!"


def test_invoke_function_error_is_the_payload_with_exit_0():
    result = invoke("error", "--template", "template.yaml", "-e", "-", stdin='{"order_id": 42}')
    assert result.returncode == 0, str(result)
    error = only_json(result.stdout)
    assert error["errorType"] == "OrderNotFound", str(result)
    assert error["errorMessage"] == "order 42 does not exist"
    assert error["stackTrace"] and 'File "/var/task/app.py"' in error["stackTrace"][0]
    written = assert_platform_lines(result.stderr, error["requestId"])
    assert written[0] == "looking up order 42", str(result)
    assert any(line.startswith("[ERROR] OrderNotFound: order 42 does not exist") for line in written), str(result)


def test_invoke_unknown_function_lists_the_available_ones():
    result = invoke("no-such-function", "--template", "template.yaml")
    assert result.returncode != 0, str(result)
    assert result.stdout == ""
    assert "no-such-function" in result.stderr
    for name, logical_id in BUNDLED_FUNCTIONS.items():
        assert name in result.stderr or logical_id in result.stderr, str(result)
    assert "Traceback" not in result.stderr, str(result)


def test_invoke_missing_event_file_is_a_clear_error():
    result = invoke("echo", "--template", "template.yaml", "-e", "no-such-event.json")
    assert result.returncode != 0, str(result)
    assert result.stdout == ""
    assert "no-such-event.json" in result.stderr, str(result)
    assert "Traceback" not in result.stderr, str(result)


def test_an_unreachable_cache_dir_is_a_clear_error(tmp_path):
    """Sandboxes read /var/runtime from SANDBOX_CACHE_DIR: a private folder above it stops the start."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    for command in (["invoke", "hello"], ["serve", "--port", str(free_port())]):
        result = run(
            SANDBOX_RUNTIME, *command, "--template", "template.yaml", env={"SANDBOX_CACHE_DIR": str(private / "c")}
        )
        assert result.returncode == 2, str(result)
        assert "SANDBOX_CACHE_DIR" in result.stderr and "searchable" in result.stderr, str(result)
        assert "Traceback" not in result.stderr, str(result)
    assert not (private / "c").exists()


def test_invoke_with_stderr_closed_still_answers():
    """`sandbox-runtime invoke ... 2>&-`: no stderr at all; the result still comes out on stdout."""
    uid_range = claim_uid_range()
    result = subprocess.run(
        [*SANDBOX_RUNTIME, "invoke", "hello", "--template", "template.yaml"],
        stdout=subprocess.PIPE,
        stderr=None,
        cwd=REPO,
        env=clean_environ(uid_range),
        timeout=60,
        preexec_fn=lambda: os.close(2),
    )
    assert result.returncode == 0
    assert only_json(result.stdout.decode())["message"] == "Hello, world!"
    assert_no_sandbox_left(uid_range, "the command")


def test_invoke_ends_when_its_stderr_goes_away():
    """`sandbox-runtime invoke ... 2>&1 | head -1`: a reader that stops reading must not hang the command."""
    uid_range = claim_uid_range()
    process = subprocess.Popen(
        [*SANDBOX_RUNTIME, "invoke", "timeout", "--template", "template.yaml", "-e", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_environ(uid_range),
        cwd=REPO,
    )
    assert process.stdin and process.stderr
    process.stdin.write(b'{"seconds": 0.5}')
    process.stdin.close()
    seen = []
    while not (line := process.stderr.readline()).startswith(b"sleeping;"):  # the function is running
        assert line, f"no function output on stderr: {seen}"
        seen.append(line)
    process.stderr.close()  # END and REPORT come after the function's 0.5 s sleep, into a closed pipe
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError("invoke hung after its stderr reader went away") from None
    finally:
        assert process.stdout
        process.stdout.close()
    assert_no_sandbox_left(uid_range, "the command")


# -- template and configuration errors ------------------------------------------------------------------

TEMPLATE_ERRORS = {
    "timeout-0": (FIXTURES / "timeout-zero.yaml", ["ZeroTimeoutFunction", "Timeout"]),
    "missing-code-uri": (FIXTURES / "missing-code.yaml", ["MissingCodeFunction", "no-such-folder"]),
    "invalid-yaml": (FIXTURES / "invalid-yaml.yaml", ["line "]),
    "missing-file": (FIXTURES / "no-such-template.yaml", ["not found"]),
}


@pytest.mark.parametrize("case", list(TEMPLATE_ERRORS))
def test_template_errors_stop_the_start(case):
    template, expected = TEMPLATE_ERRORS[case]
    relative = template.relative_to(REPO)
    pending = {
        "serve": start(SANDBOX_RUNTIME, "serve", "--template", relative, "--port", free_port()),
        "invoke": start_invoke("zero-timeout", "--template", relative),
    }
    for subcommand, job in pending.items():
        result = job.result(timeout=30)
        assert result.returncode != 0, f"{subcommand}: {result}"
        assert result.stdout == "", f"{subcommand}: {result}"
        assert str(relative) in result.stderr, f"{subcommand}: {result}"  # names the file as given
        for text in expected:
            assert text in result.stderr, f"{subcommand}: {result}"
        assert "Traceback" not in result.stderr, f"{subcommand}: {result}"


def test_invalid_environment_setting_is_a_configuration_error():
    result = run(SANDBOX_RUNTIME, "serve", "--template", "template.yaml", env={"SANDBOX_PORT": "abc"}, timeout=30)
    assert result.returncode != 0, str(result)
    assert "configuration error" in result.stderr and "SANDBOX_PORT" in result.stderr and "abc" in result.stderr
    assert "Traceback" not in result.stderr, str(result)


@pytest.mark.parametrize("command", ["serve", "invoke", "build", "mcp"])
def test_a_configuration_error_is_reported_before_the_heavy_imports(command):
    """The settings are read first: a bad variable is reported without importing the template loader
    (cfn-lint) and the service, which took a second for an answer that needs neither."""
    probe = (
        "import sys\n"
        "from runtime_api import cli\n"
        f"code = cli.main([{command!r}] + (['hello'] if {command!r} == 'invoke' else []))\n"
        "heavy = ('runtime_api.template', 'runtime_api.service', 'cfnlint')\n"
        "print(code, sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = run([sys.executable, "-c", probe], env={"SANDBOX_PORT": "abc", "SANDBOX_POOL_SIZE": "x"}, timeout=30)
    assert result.stdout.strip() == "2 []", str(result)
    assert "configuration error" in result.stderr, str(result)


def test_invoke_log_level_flag_beats_environment_beats_default():
    """Warnings show by default (see the first test); SANDBOX_LOG_LEVEL=error hides them; --log-level wins."""
    pending_quiet = start_invoke("hello", "--template", WARNING_TEMPLATE, env={"SANDBOX_LOG_LEVEL": "error"})
    pending_flag = start_invoke(
        "hello", "--template", WARNING_TEMPLATE, "--log-level", "warning", env={"SANDBOX_LOG_LEVEL": "error"}
    )
    quiet = pending_quiet.result()
    assert quiet.returncode == 0, str(quiet)
    assert warning_lines(quiet.stderr) == [], f"SANDBOX_LOG_LEVEL=error was ignored:\n{quiet}"
    assert_platform_lines(quiet.stderr, only_json(quiet.stdout)["request_id"])  # function logs are not service logs

    flag = pending_flag.result()
    assert flag.returncode == 0, str(flag)
    assert warning_lines(flag.stderr), str(flag)


# -- help and version ------------------------------------------------------------------------------------


def test_help_and_version():
    top, serve_help, shown, module_help, module_version = [
        job.result()
        for job in [
            start(SANDBOX_RUNTIME, "--help"),
            start(SANDBOX_RUNTIME, "serve", "--help"),
            start(SANDBOX_RUNTIME, "--version"),
            start(PYTHON_M, "--help"),
            start(PYTHON_M, "--version"),
        ]
    ]
    for result in (top, module_help):
        assert result.returncode == 0, str(result)
        assert "serve" in result.stdout and "invoke" in result.stdout and "--version" in result.stdout, str(result)
    assert serve_help.returncode == 0, str(serve_help)
    assert "--port" in serve_help.stdout and "--template" in serve_help.stdout, str(serve_help)
    for result in (shown, module_version):
        assert result.returncode == 0, str(result)
        assert result.stdout.strip() == f"sandbox-runtime {version('sandbox-runtime')}", str(result)


# -- serve ---------------------------------------------------------------------------------------------


class CommandService(ServiceProcess):
    """A service started from an exact command line (ServiceProcess always adds `serve --port`)."""

    def __init__(self, argv: list[str], *, port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.uid_range = claim_uid_range()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"sandbox-runtime-test-cli-{port}.log"
        environment = clean_environ(self.uid_range, {"SANDBOX_POOL_SIZE": "0", "SANDBOX_LOG_FORMAT": "json"})
        environment.update(env or {})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=environment, cwd=REPO)
        try:
            self._wait_healthy()
        except BaseException:
            self._log.close()
            raise


def events_named(service: ServiceProcess, name: str) -> list[dict]:
    return [event for event in service.log_events() if event.get("event") == name]


def test_python_m_without_subcommand_serves_and_the_port_flag_beats_the_environment():
    port = free_port()
    with socket.socket() as held:  # if SANDBOX_PORT won over --port, the service could not bind it
        held.bind(("127.0.0.1", 0))
        held.listen()
        env_port = held.getsockname()[1]
        service = CommandService(
            [*PYTHON_M, "--template", "template.yaml", "--port", str(port), "--log-level", "info"],
            port=port,
            env={"SANDBOX_PORT": str(env_port), "SANDBOX_LOG_LEVEL": "warning"},
        )
        try:
            assert service.health()["functions"] == len(BUNDLED_FUNCTIONS)
            response = service.client().invoke(FunctionName="hello", Payload=b'{"name": "Ada"}')
            assert json.loads(response["Payload"].read())["message"] == "Hello, Ada!"
            assert events_named(service, "service.ready"), service.logs()  # --log-level info beat the variable
        finally:
            assert service.stop() == 0, service.logs()


def test_environment_sets_what_no_flag_gives():
    port = free_port()
    service = CommandService(
        [*SANDBOX_RUNTIME, "serve", "--template", str(WARNING_TEMPLATE)],
        port=port,
        env={"SANDBOX_PORT": str(port), "SANDBOX_LOG_LEVEL": "warning"},
    )
    try:
        response = service.client().invoke(FunctionName="echo", Payload=b'{"via": "SANDBOX_PORT"}')
        assert json.loads(response["Payload"].read()) == {"via": "SANDBOX_PORT"}
        levels = {event.get("level") for event in service.log_events()}
        assert levels and levels <= {"warning", "error"}, service.logs()  # SANDBOX_LOG_LEVEL beat the default
        assert sandbox_processes(service.uid_range), "expected the warm sandbox to be running before SIGTERM"
    finally:
        assert service.stop() == 0, service.logs()


def test_serve_shuts_down_cleanly_on_sigint(start_service):
    """Ctrl-C. (SIGTERM: every other service here is stopped with it, and stop() == 0 is asserted.)"""
    service = start_service(BUNDLED_TEMPLATE, env={"SANDBOX_POOL_SIZE": "1"})
    response = service.client().invoke(FunctionName="hello", Payload=b'{"name": "Ada"}')
    assert json.loads(response["Payload"].read())["message"] == "Hello, Ada!"
    deadline = time.monotonic() + 20
    while not all(pool["environments"] for pool in service.health()["pools"]["functions"].values()):
        assert time.monotonic() < deadline, f"pools never pre-started: {service.health()}"
        time.sleep(0.05)
    assert sandbox_processes(service.uid_range), "expected running sandboxes before the signal"
    assert service.stop(signal.SIGINT) == 0, service.log_path.read_text()  # stop() also checks for leftover sandboxes
    logs = service.log_path.read_text()
    assert '"event": "service.stopped"' in logs, logs
    assert "Traceback" not in logs, logs


# -- runtime fallback --------------------------------------------------------------------------------------


def fallback_interpreter(line: str) -> str:
    """The Python version the warning line says functions fall back to."""
    match = re.search(r"(/\S*/python3(?:\.\d+)?)\b", line)
    assert match, f"the warning does not name the interpreter used instead: {line}"
    interpreter = match[1]
    assert Path(interpreter).is_file(), line
    out = subprocess.run([interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True)
    return out.stdout.decode().strip()


def test_invoke_falls_back_to_python3_with_one_warning():
    result = invoke("future-two", "--template", FALLBACK_TEMPLATE)
    assert result.returncode == 0, str(result)
    output = only_json(result.stdout)
    mentions = [line for line in result.stderr.splitlines() if MISSING_INTERPRETER in line]
    assert len(mentions) == 1, str(result)
    assert re.search(r"\bwarning\b", mentions[0], re.IGNORECASE), mentions[0]
    assert output == {
        "python": fallback_interpreter(mentions[0]),
        "execution_env": f"AWS_Lambda_{MISSING_INTERPRETER}",
        "function": "future-two",
    }


def test_serve_falls_back_to_python3_with_one_warning(start_service):
    service = start_service(FALLBACK_TEMPLATE)
    client = service.client()
    for name in ("future-one", "future-two"):
        output = json.loads(client.invoke(FunctionName=name)["Payload"].read())
        assert output["function"] == name and output["execution_env"] == f"AWS_Lambda_{MISSING_INTERPRETER}"
    warnings = [
        line
        for line in service.logs().splitlines()
        if MISSING_INTERPRETER in line and re.search(r"\bwarning\b", line, re.IGNORECASE)
    ]
    assert len(warnings) == 1, service.logs()
    assert output["python"] == fallback_interpreter(warnings[0])


def test_strict_runtimes_refuses_a_missing_interpreter():
    pending = {
        "serve --strict-runtimes": start(
            SANDBOX_RUNTIME, "serve", "--template", FALLBACK_TEMPLATE, "--port", free_port(), "--strict-runtimes"
        ),
        "invoke --strict-runtimes": start_invoke("future-one", "--template", FALLBACK_TEMPLATE, "--strict-runtimes"),
        "invoke, SANDBOX_STRICT_RUNTIMES=true": start_invoke(
            "future-one", "--template", FALLBACK_TEMPLATE, env={"SANDBOX_STRICT_RUNTIMES": "true"}
        ),
    }
    for form, job in pending.items():
        result = job.result(timeout=30)
        assert result.returncode != 0, f"{form}: {result}"
        assert result.stdout == "", f"{form}: {result}"
        assert MISSING_INTERPRETER in result.stderr, f"{form}: {result}"
        assert "Traceback" not in result.stderr, f"{form}: {result}"
