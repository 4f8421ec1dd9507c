"""runtime_api/status_page.py (and recent.py behind it): the status page at GET / and the JSON it polls, through
the real service, and the page itself rendered by a real headless Chromium.

The service keeps small rings here (RING_INVOCATIONS, RING_LINES), so that the bounds are reached quickly; each
test reads what it made right after making it. STATUS_PAGE_SCREENSHOT=path (scripts/status-screenshot) also
saves the browser test's screenshot there, for the docs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from conftest import FUNCTIONS, ServiceProcess
from support import invoke, request_id, wait_for

RING_INVOCATIONS = 6
RING_LINES = 20
FUNCTION_NAMES = {"status-say", "status-fail", "status-sleep", "status-throttled", "status-nodejs"}
SE = "/workspace/se"


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    """This module's own service (conftest's `client` talks to it)."""
    running = ServiceProcess(
        FUNCTIONS / "status.yaml",
        env={"SANDBOX_STATUS_INVOCATIONS": str(RING_INVOCATIONS), "SANDBOX_STATUS_LOG_LINES": str(RING_LINES)},
    )
    yield running
    assert running.stop() == 0


def get(service: ServiceProcess, path: str) -> dict:
    response = httpx.get(f"{service.url}{path}", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    return response.json()


def invocations(service: ServiceProcess) -> dict[str, dict]:
    return {i["request_id"]: i for i in get(service, "/status/invocations?limit=1000")["invocations"]}


def lines_of(service: ServiceProcess, request: str) -> list[str]:
    return [line["text"] for line in get(service, "/status/logs?limit=1000")["lines"] if line["request_id"] == request]


def reported(service: ServiceProcess, request: str) -> list[str] | None:
    """The log lines of an invocation once its REPORT is in (END and REPORT may follow its answer)."""
    lines = lines_of(service, request)
    return lines if any(text.startswith("REPORT RequestId: ") for text in lines) else None


# -- JSON endpoints ---------------------------------------------------------------------------------


def test_invocations_are_listed_newest_first_with_their_outcomes(service: ServiceProcess, client) -> None:
    began = time.time()
    ok = request_id(invoke(client, "status-say", {"text": "fine"})[0])
    failed = request_id(invoke(client, "status-fail", {"value": 7})[0])
    timed_out = request_id(invoke(client, "status-sleep", {"seconds": 3})[0])  # Timeout: 1
    with pytest.raises(client.exceptions.TooManyRequestsException) as throttled:
        client.invoke(FunctionName="status-throttled", Payload=b"{}")  # ReservedConcurrentExecutions: 0
    refused = throttled.value.response["ResponseMetadata"]["RequestId"]

    answer = get(service, "/status/invocations?limit=4")
    assert [i["request_id"] for i in answer["invocations"]] == [refused, timed_out, failed, ok]
    assert answer["capacity"] == RING_INVOCATIONS and answer["recorded"] >= 4
    by_id = {i["request_id"]: i for i in answer["invocations"]}
    assert by_id[ok]["outcome"] == "success" and by_id[ok]["error_type"] is None
    assert by_id[ok]["function"] == "status-say" and by_id[ok]["version"] == "$LATEST"
    assert by_id[ok]["init_duration_ms"] > 0  # its environment's cold start
    assert by_id[failed]["outcome"] == "error"
    assert by_id[failed]["error_type"] == "ValueError"  # the function's own, from its error payload
    assert by_id[failed]["error_message"] == "bad value: 7"
    assert by_id[timed_out]["outcome"] == "timeout" and by_id[timed_out]["error_type"] == "Sandbox.Timedout"
    assert 990 <= by_id[timed_out]["duration_ms"] < 2500
    assert by_id[refused]["outcome"] == "throttled" and by_id[refused]["duration_ms"] is None
    assert by_id[refused]["error_type"] == "TooManyRequestsException"
    assert by_id[refused]["error_message"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    for entry in answer["invocations"]:
        started = datetime.strptime(entry["start_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        assert began - 1 <= started <= time.time()
    starts = [i["start_time"] for i in answer["invocations"]]
    assert starts == sorted(starts, reverse=True)


def test_the_log_tail_shows_what_a_function_printed(service: ServiceProcess, client) -> None:
    token = f"printed-{uuid.uuid4().hex}"
    said = request_id(invoke(client, "status-say", {"text": token})[0])
    lines = wait_for(lambda: reported(service, said), 10, "the invocation's REPORT line")
    assert lines[0] == f"START RequestId: {said} Version: $LATEST"
    assert lines[1] == token
    assert lines[2] == f"END RequestId: {said}"
    assert lines[3].startswith(f"REPORT RequestId: {said}\tDuration: ")
    line = next(line for line in get(service, "/status/logs")["lines"] if line["text"] == token)
    assert line["function"] == "status-say" and line["truncated"] == 0

    # Asking after a cursor gives only the lines that came since.
    since = get(service, "/status/logs")["next"]
    nothing = {"lines": [], "next": since, "skipped": 0, "capacity": RING_LINES}
    assert get(service, f"/status/logs?after={since}") == nothing
    later = request_id(invoke(client, "status-say", {"text": "later"})[0])
    wait_for(lambda: reported(service, later), 10, "the second invocation's REPORT line")
    newer = get(service, f"/status/logs?after={since}")
    assert [line["cursor"] for line in newer["lines"]] == list(range(since + 1, since + 5))
    assert [line["text"] for line in newer["lines"]][1] == "later"
    assert newer["next"] == since + 4 and newer["skipped"] == 0
    # A cursor from beyond the last line (a service restarted since the page last asked) counts as none.
    assert get(service, f"/status/logs?after={since + 10**9}&limit=4") == newer
    # So does one from before this run's first line: an earlier run's cursor, however many lines this
    # run has logged since (the lines after it here were never that cursor's to skip).
    assert get(service, f"/status/logs?after={since - 10**9}&limit=4") == newer


def test_the_rings_keep_only_the_last_entries(service: ServiceProcess, client) -> None:
    before = get(service, "/status/invocations")["recorded"]
    first_line = get(service, "/status/logs")["next"]
    made = [request_id(invoke(client, "status-say", {"text": f"bounded {n}"})[0]) for n in range(RING_INVOCATIONS + 3)]
    long = request_id(invoke(client, "status-say", {"text": "x" * 5000})[0])
    made.append(long)

    answer = get(service, "/status/invocations?limit=1000")
    assert [i["request_id"] for i in answer["invocations"]] == made[::-1][:RING_INVOCATIONS]
    assert answer["recorded"] == before + len(made) and answer["capacity"] == RING_INVOCATIONS

    wait_for(lambda: reported(service, long), 10, "the last invocation's REPORT line")
    logs = get(service, "/status/logs?limit=1000")
    cursors = [line["cursor"] for line in logs["lines"]]
    assert len(cursors) == RING_LINES == logs["capacity"]
    assert cursors == list(range(logs["next"] - RING_LINES + 1, logs["next"] + 1))
    assert not any(line["text"].startswith("bounded 0") for line in logs["lines"])  # long gone
    printed = next(line for line in logs["lines"] if line["request_id"] == long and line["text"].startswith("x"))
    assert printed["text"] == "x" * 2048 and printed["truncated"] == 5000 - 2048  # a line is kept in part
    # Lines after an old cursor that are gone from the ring are counted, not lost silently.
    since_old = get(service, f"/status/logs?after={first_line}&limit=5")
    assert [line["cursor"] for line in since_old["lines"]] == cursors[-5:]
    assert since_old["skipped"] == cursors[-5] - first_line - 1


@pytest.mark.parametrize(
    ("query", "name", "bounds"),
    [
        ("/status/invocations?limit=0", "limit", "1 to 1000"),
        ("/status/invocations?limit=1001", "limit", "1 to 1000"),
        ("/status/invocations?limit=ten", "limit", "1 to 1000"),
        ("/status/invocations?limit=1.5", "limit", "1 to 1000"),
        ("/status/invocations?limit=+5", "limit", "1 to 1000"),
        ("/status/invocations?limit=", "limit", "1 to 1000"),
        ("/status/logs?limit=-3", "limit", "1 to 1000"),
        ("/status/logs?after=-1", "after", "0 to 9223372036854775807"),
        ("/status/logs?after=1_000", "after", "0 to 9223372036854775807"),
        ("/status/logs?after=%D9%A1", "after", "0 to 9223372036854775807"),  # an Arabic-Indic digit one
        ("/status/logs?after=9223372036854775808", "after", "0 to 9223372036854775807"),
        (f"/status/logs?after={'9' * 5000}", "after", "0 to 9223372036854775807"),
    ],
)
def test_bad_query_parameters_are_refused_with_a_clear_message(
    service: ServiceProcess, query: str, name: str, bounds: str
) -> None:
    response = httpx.get(f"{service.url}{query}", timeout=10)
    assert response.status_code == 400
    assert response.headers["x-amzn-ErrorType"] == "ValidationException"
    message = response.json()["message"]
    assert message.startswith(f"{name} must be a whole number from {bounds}, got '")
    assert len(message) < 200  # a long value is not echoed whole


def test_functions_are_listed_with_their_configuration_and_environments(service: ServiceProcess, client) -> None:
    invoke(client, "status-say", {"text": "warm"})
    answer = get(service, "/status/functions")
    functions = {f["name"]: f for f in answer["functions"]}
    assert set(functions) == FUNCTION_NAMES
    assert functions["status-fail"]["memory_size"] == 512 and functions["status-fail"]["timeout"] == 5
    assert functions["status-sleep"]["timeout"] == 1 and functions["status-sleep"]["runtime"] == "python3.11"
    assert functions["status-say"]["state"] == "Active" and functions["status-say"]["state_reason"] is None
    assert functions["status-throttled"]["concurrency_limit"] == 0
    unavailable = functions["status-nodejs"]
    assert unavailable["state"] == "Failed" and "runtime nodejs20.x is not supported" in unavailable["state_reason"]
    assert unavailable["environments"] == {} and unavailable["concurrency_limit"] is None
    health = service.health()["pools"]
    assert answer["environments"]["limit"] == health["environments"]["limit"]

    def ready() -> int:
        said = next(f for f in get(service, "/status/functions")["functions"] if f["name"] == "status-say")
        return said["environments"].get("ready", 0)

    assert wait_for(ready, 10, "status-say's environment back to ready") >= 1


def test_sessions_are_listed_by_a_digest_of_their_id(service: ServiceProcess) -> None:
    secret = f"status-{uuid.uuid4().hex}"
    created = httpx.post(f"{service.url}{SE}/session/{secret}", timeout=60)
    assert created.status_code == 200, created.text
    try:
        ran = httpx.post(f"{service.url}{SE}/execute/{secret}", json={"command": "true"}, timeout=60)
        assert ran.status_code == 200, ran.text
        response = httpx.get(f"{service.url}/status/sessions", timeout=10)
        assert secret not in response.text  # the id is what lets a caller use the session
        answer = response.json()
        assert answer["available"] is True and answer["problem"] is None and answer["limit"] >= 1
        (session,) = answer["sessions"]
        assert session["id_sha256"] == hashlib.sha256(secret.encode()).hexdigest()[:16]
        assert session["state"] == "idle" and session["executions"] == 1
        assert 0 <= session["age_seconds"] < 60 and 0 <= session["idle_seconds"] <= session["age_seconds"]
    finally:
        assert httpx.delete(f"{service.url}{SE}/session/{secret}", timeout=60).status_code == 200
    assert get(service, "/status/sessions")["sessions"] == []


def test_the_page_and_its_files_are_served_under_a_strict_policy(service: ServiceProcess) -> None:
    page = httpx.get(f"{service.url}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert '<script src="status/page.js" defer></script>' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere (offline machines)
    script = httpx.get(f"{service.url}/status/page.js", timeout=10)
    assert script.status_code == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "innerHTML" not in script.text and "insertAdjacentHTML" not in script.text
    styles = httpx.get(f"{service.url}/status/page.css", timeout=10)
    assert styles.status_code == 200 and styles.headers["content-type"] == "text/css; charset=utf-8"
    assert "@import" not in styles.text and "url(" not in styles.text


# -- the page in a browser --------------------------------------------------------------------------

WIDTH, HEIGHT = 1280, 1500


def chromium(url: str, profile: Path, *action: str) -> str:
    """Run headless Chromium on `url` until the page's script has had 3 s of (virtual) time; its stdout."""
    binary = shutil.which("chromium")
    assert binary is not None, "chromium is not installed: run scripts/install"
    command = [
        binary,
        "--headless",
        # The tests run as root, where Chromium's own sandbox cannot start. This browser only ever loads
        # the page of a service the test started on 127.0.0.1, with the test's own functions' output.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        "--virtual-time-budget=3000",
        *action,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=profile)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class _Sections(HTMLParser):
    """The text of each element with an id (its descendants' included), and every tag that was seen."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, list[str]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("meta", "link", "input", "br", "img"):
            return  # void elements have no end tag
        identifier = dict(attrs).get("id")
        self._open.append(identifier)
        if identifier:
            self.text[identifier] = []

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for identifier in self._open:
            if identifier:
                self.text[identifier].append(data)

    def of(self, identifier: str) -> str:
        return " ".join(self.text.get(identifier, []))


def png_checked(path: Path) -> None:
    """A valid 8-bit RGB(A) PNG of the window's size, not blank: a uniform image filters to all zeros, so its
    share of non-zero filtered bytes is ~0; a rendered page's is a few percent."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        body = data[at + 8 : at + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0]
        chunks.setdefault(kind, []).append(body)
        at += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][0][:10])
    assert (width, height, depth) == (WIDTH, HEIGHT, 8) and color in (2, 6) and b"IEND" in chunks
    pixels = zlib.decompress(b"".join(chunks[b"IDAT"]))
    assert len(pixels) == height * (1 + width * (3 if color == 2 else 4))
    assert (len(pixels) - pixels.count(0)) / len(pixels) > 0.01, "the screenshot is blank"


def test_the_page_renders_the_service_in_a_browser(service: ServiceProcess, client, tmp_path: Path) -> None:
    token = f"browser-{uuid.uuid4().hex[:12]}"
    hostile = '<img id="status-injected" src="x"><b>bold</b>'
    invoke(client, "status-sleep", {"seconds": 3})  # times out
    with pytest.raises(client.exceptions.TooManyRequestsException):
        client.invoke(FunctionName="status-throttled", Payload=b"{}")
    said = request_id(invoke(client, "status-say", {"text": f"{token} {hostile}"})[0])
    failed = request_id(invoke(client, "status-fail", {"value": 42})[0])
    secret = f"status-browser-{uuid.uuid4().hex}"
    assert httpx.post(f"{service.url}{SE}/session/{secret}", timeout=60).status_code == 200
    try:
        wait_for(lambda: reported(service, failed), 10, "the last invocation's REPORT line")
        dom = chromium(f"{service.url}/", tmp_path, "--dump-dom")
        page = _Sections()
        page.feed(dom)
        screenshot = tmp_path / "status-page.png"
        chromium(f"{service.url}/", tmp_path, f"--screenshot={screenshot}")
    finally:
        httpx.delete(f"{service.url}{SE}/session/{secret}", timeout=60)

    assert page.of("connection") == "live", page.of("connection")
    functions = page.of("functions")
    assert all(name in functions for name in FUNCTION_NAMES), functions
    assert "runtime nodejs20.x is not supported" in functions  # an unavailable function says why
    recent = page.of("invocations")
    assert said in recent and failed in recent and "ValueError" in recent and "bad value: 42" in recent
    assert all(outcome in recent for outcome in ("success", "error", "timeout", "throttled")), recent
    log = page.of("log")
    assert f"{token} {hostile}" in log  # the function's line, shown as the text it is
    assert f"START RequestId: {failed} Version: $LATEST" in log
    assert hashlib.sha256(secret.encode()).hexdigest()[:16] in page.of("sessions") and secret not in dom
    # Untrusted output never becomes markup: the page has no <img> or <b> of its own.
    assert not [tag for tag, _ in page.tags if tag in ("img", "b")], page.tags

    png_checked(screenshot)
    if wanted := os.environ.get("STATUS_PAGE_SCREENSHOT"):
        shutil.copyfile(screenshot, wanted)
