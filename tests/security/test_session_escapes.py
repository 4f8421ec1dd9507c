"""Agent sessions under attack: code in a session has the same walls as a function (no host files, no host
secret, no way to the service's port, its own processes only), and the service's file operations on a
session's workspace never follow what the session puts there (symbolic links out of it, FIFOs, links swapped
in while the service walks the path). The workspace is capped, and a closed session leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REPO, sandbox_processes
from harness import HOST_SECRET, TEMPLATE, assert_unharmed, module_service
from support import wait_for

service = module_service(SANDBOX_SESSION_POOL_SIZE="0", SANDBOX_SESSION_WORKSPACE_SIZE="16")
SE = "/workspace/se"


@pytest.fixture(scope="module")
def http(service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        yield client


@pytest.fixture
def session(http: httpx.Client) -> Iterator[str]:
    session_id = f"sec-{uuid.uuid4().hex[:8]}"
    assert http.post(f"{SE}/session/{session_id}", json={"allow_network": True}).status_code == 200
    yield session_id
    http.delete(f"{SE}/session/{session_id}")


def _state_dir(service) -> Path:
    return Path(next(e["state_dir"] for e in service.log_events() if e.get("event") == "service.ready"))


def sh(http: httpx.Client, session: str, command: str) -> dict:
    response = http.post(f"{SE}/execute/{session}", json={"command": command, "timeout": 30})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def handler(http: httpx.Client, session: str, code: str, event: object = None) -> object:
    response = http.post(f"{SE}/execute_code/{session}", json={"code": code, "event": event or {}, "timeout": 30})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["exit_code"] == 0, data
    return data["result"]


def code_of(response: httpx.Response) -> str | None:
    body = response.json() if response.headers.get("content-type") == "application/json" else None
    return body["error"]["code"] if body and not body["success"] else None


READ = """
import errno, os
def handler(event):
    seen = {}
    for path in event["paths"]:
        try:
            os.listdir(path) if os.path.isdir(path) else open(path, "rb").close()
            seen[path] = "readable"
        except OSError as exc:
            seen[path] = errno.errorcode.get(exc.errno, str(exc.errno))
    return seen
"""


def test_host_files_and_the_service_are_not_there(service, http, session):
    workspaces = sorted((_state_dir(service) / "sessions").glob("ws-*"))
    assert workspaces  # this session's, on the host
    paths = ["/etc/shadow", "/root", "/home", str(REPO / "runtime_api" / "config.py"), str(TEMPLATE)]
    paths += [str(_state_dir(service)), str(workspaces[0]), f"/proc/{service.proc.pid}/environ"]
    assert handler(http, session, READ, {"paths": paths}) == dict.fromkeys(paths, "ENOENT")
    assert_unharmed(service)


def test_no_host_secret_anywhere_inside(http, session):
    found = sh(http, session, "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; cat /proc/1/cmdline")["stdout"]
    assert HOST_SECRET not in found
    assert "SANDBOX_SESSION_AGENT" not in sh(http, session, "env")["stdout"]  # the agent keeps its own variable


def test_the_service_port_is_out_of_reach(service, http, session):
    port = service.port
    probe = f"""
import socket
def handler(event):
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
        direct = "connected"
    except OSError as exc:
        direct = type(exc).__name__
    with socket.create_connection(("127.0.0.1", 3128), timeout=5) as proxy:  # asked explicitly, despite NO_PROXY
        proxy.sendall(b"GET http://127.0.0.1:{port}/workspace/se/healthy HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        status = int(proxy.recv(4096).split()[1])
    return [direct, status]
"""
    assert handler(http, session, probe) == ["ConnectionRefusedError", 403]  # the egress proxy refuses loopback
    assert_unharmed(service)


def test_processes_and_namespaces(http, session):
    assert sh(http, session, "ps -eo user= | sort -u")["stdout"].split() == ["sbx_user1051"]
    unshare = sh(http, session, "unshare -r true; echo $?")
    assert unshare["stdout"].strip() != "0"
    assert sh(http, session, "id -u")["stdout"] == "993\n"


def test_sessions_do_not_see_each_other(http, session):
    other = f"sec-{uuid.uuid4().hex[:8]}"
    assert http.post(f"{SE}/session/{other}").status_code == 200
    try:
        sh(http, session, "echo mine > secret.txt; nohup sleep 60 >/dev/null 2>&1 &")
        seen = sh(http, other, "ls /workspace; ps -eo args | grep -c '[s]leep 60'; find / -name secret.txt 2>/dev/null")
        assert seen["stdout"] == "0\n"
    finally:
        http.delete(f"{SE}/session/{other}")


def _host_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_links_out_of_the_workspace_are_never_followed(service, http, session):
    config = REPO / "runtime_api" / "config.py"
    state = _state_dir(service)
    before = {p: _host_digest(p) for p in ("/etc/shadow", "/etc/passwd", str(config))}
    sh(
        http,
        session,
        f"ln -s /etc/shadow shadow; ln -s {config} config; ln -s / root; ln -s {state} state; "
        "ln -s .. up; mkdir d; ln -s /etc d/etc; ln -s /etc/passwd d/passwd; mkfifo fifo; "
        "ln -s loop loop; echo inside > plain.txt",
    )
    for path in ["shadow", "config", "root/etc/shadow", "state/sessions", "up/etc/passwd", "d/etc/passwd",
                 "d/passwd", "fifo", "loop", "root", "/workspace/shadow"]:  # fmt: skip
        response = http.get(f"{SE}/download/{session}/{path}", timeout=10)  # a FIFO must not block it
        assert response.status_code in (400, 404), (path, response.status_code, response.content[:100])
        assert code_of(response) in ("INVALID_PATH", "FILE_NOT_FOUND"), (path, response.text)
    listing = http.get(f"{SE}/files/{session}", timeout=10).json()["data"]["files"]
    assert [f["name"] for f in listing] == ["plain.txt"]  # links and the FIFO are not listed, never walked into
    for folder in ("root", "d/etc", "state", "up"):
        assert code_of(http.get(f"{SE}/files/{session}", params={"path": folder})) == "INVALID_PATH"
        upload = http.post(f"{SE}/upload/{session}", files={"file": ("x", b"x")}, data={"path": f"{folder}/"})
        assert code_of(upload) == "INVALID_PATH", folder
        created = http.post(f"{SE}/create/{session}", json={"filename": f"{folder}/x", "content": "x"})
        assert code_of(created) == "INVALID_PATH", folder
    # Writing *at* a link replaces the link itself: the file it pointed to is untouched.
    assert (
        http.post(f"{SE}/upload/{session}", files={"file": ("x", b"mine")}, data={"path": "shadow"}).status_code == 200
    )
    assert http.post(f"{SE}/create/{session}", json={"filename": "config", "content": "mine"}).status_code == 200
    assert http.post(f"{SE}/create/{session}", json={"filename": "d/passwd", "content": "mine"}).status_code == 200
    assert (
        sh(http, session, "test -L shadow || test -L config || echo replaced; cat shadow")["stdout"] == "replaced\nmine"
    )
    assert {p: _host_digest(p) for p in before} == before
    assert_unharmed(service)


def test_links_swapped_in_while_the_service_walks(service, http, session):
    """A loop in the sandbox keeps swapping a real folder and a link to /etc under the same name while the
    service downloads and lists through it: the service sees the folder's file or refuses, never the host's."""
    sh(http, session, "mkdir real && echo inside > real/passwd && ln -s /etc fake")
    sh(
        http,
        session,
        "nohup sh -c 'while true; do mv -T real r; mv -T r real; ln -sfn /etc r; rm r; mv -T fake r; "
        "mv -T r fake; done' >/dev/null 2>&1 &",
    )
    host_passwd = Path("/etc/passwd").read_bytes()
    outcomes: dict[str, int] = {}

    def hammer() -> None:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            for _ in range(150):
                response = client.get(f"{SE}/download/{session}/r/passwd")
                assert response.content != host_passwd
                if response.status_code == 200:
                    assert response.content == b"inside\n"
                key = str(response.status_code if response.status_code == 200 else code_of(response))
                outcomes[key] = outcomes.get(key, 0) + 1
                listing = client.get(f"{SE}/files/{session}", params={"path": "r"})
                assert listing.status_code in (200, 400, 404)
                if listing.status_code == 200:
                    assert all(f["name"] == "r/passwd" for f in listing.json()["data"]["files"])

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(outcomes) <= {"200", "INVALID_PATH", "FILE_NOT_FOUND"}, outcomes
    assert outcomes.get("INVALID_PATH"), outcomes  # the walk did meet the link (about a third of the time here)
    assert_unharmed(service)


def test_the_workspace_is_capped(service, http, session):
    filled = sh(http, session, "dd if=/dev/zero of=fill bs=1M count=40 2>&1; df -m /workspace | tail -1")
    assert "No space left on device" in filled["stdout"]
    response = http.post(f"{SE}/upload/{session}", files={"file": ("more", b"x" * (8 * 1024 * 1024))})
    assert response.status_code == 507 and code_of(response) == "RESOURCE_LIMIT"
    assert not any(f["name"] == "more" for f in http.get(f"{SE}/files/{session}").json()["data"]["files"])
    assert_unharmed(service)


def test_a_closed_session_leaves_nothing(service, http):
    session_id = f"sec-{uuid.uuid4().hex[:8]}"
    folders = _state_dir(service) / "sessions"
    before = set(folders.glob("ws-*"))
    assert http.post(f"{SE}/session/{session_id}").status_code == 200
    (workspace,) = set(folders.glob("ws-*")) - before
    uid = next(e["uid"] for e in service.log_events() if e.get("session_id") == session_id)
    sh(http, session_id, "nohup sh -c 'trap \"\" TERM HUP; sleep 300' >/dev/null 2>&1 & echo x > f")
    assert str(workspace) in Path("/proc/self/mountinfo").read_text()  # its tmpfs
    assert http.delete(f"{SE}/session/{session_id}").status_code == 200
    mine = lambda: [p for p in sandbox_processes(service.uid_range) if p.split()[0] == str(uid)]  # noqa: E731
    wait_for(lambda: not mine(), 10, "no process of the closed session")
    assert not workspace.exists()
    assert str(workspace) not in Path("/proc/self/mountinfo").read_text()
