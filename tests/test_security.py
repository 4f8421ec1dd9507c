"""What a hostile handler can reach from inside its sandbox: secrets, the filesystem, processes, the network,
and who it runs as on the host. (Fork bombs and resource floods are the next issue's.)"""

from __future__ import annotations

import builtins
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest


def invoke(client, name: str, event: object = None) -> dict:
    kwargs = {} if event is None else {"Payload": json.dumps(event).encode()}
    response = client.invoke(FunctionName=name, **kwargs)
    body = response["Payload"].read()
    assert "FunctionError" not in response, body
    return json.loads(body)


@pytest.fixture(scope="module")
def probed(client) -> dict:
    return invoke(client, "probe")


def test_host_secrets_are_not_there(probed):
    assert probed["/etc/shadow"] == "FileNotFoundError"
    assert probed["/root/.bashrc"] == "FileNotFoundError"
    passwd = probed["/etc/passwd"]
    assert "sbx_user1051:x:993:990:" in passwd
    host_users = {line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines() if line}
    sandbox_users = {line.split(":")[0] for line in passwd.splitlines() if line}
    assert sandbox_users <= {"root", "sbx_user1051", "nobody"}, sandbox_users & host_users


def test_pid_1_environment_holds_no_host_variables(probed):
    environ = probed["/proc/1/environ"]
    leaked = [key for key, value in os.environ.items() if f"{key}={value}" in environ]
    assert not leaked, f"host variables in the sandbox's /proc/1/environ: {leaked}"


@pytest.mark.parametrize("path", ["/var/task/written", "/x", "/usr/x", "/opt/x", "/var/runtime/x"])
def test_only_tmp_is_writable(probed, path):
    outcome = probed[path]
    assert outcome != "written"
    assert issubclass(getattr(builtins, outcome), OSError), outcome


def test_tmp_is_writable(probed):
    assert probed["/tmp/ok"] == "written"


def test_only_the_sandbox_processes_are_visible(probed):
    pids = probed["pids"]
    host_pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    assert 1 in pids
    assert len(pids) <= 5, pids  # the sandbox's init and the runtime, not the host's processes
    assert len(host_pids) > len(pids)


def test_function_runs_as_lambdas_sandbox_user(client):
    assert invoke(client, "context-info")["uid"] == 993


def test_the_service_port_is_not_reachable(client, service):
    result = invoke(client, "connect", {"host": "127.0.0.1", "port": service.port})
    assert result == {"result": "ConnectionRefusedError", "errno": 111}


def test_host_loopback_services_are_not_reachable(client):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # reachable from the host
        result = invoke(client, "connect", {"host": "127.0.0.1", "port": port})
    assert result == {"result": "ConnectionRefusedError", "errno": 111}


def _host_ipv4_addresses() -> list[str]:
    """The host's own IPv4 addresses other than loopback (the LOCAL /32 entries of the FIB)."""
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    local = {lines[i - 1].split()[-1] for i, line in enumerate(lines) if "/32 host LOCAL" in line and i}
    return sorted(address for address in local if not address.startswith("127."))


def test_host_addresses_are_not_reachable(client):
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        port = listener.getsockname()[1]
        addresses = _host_ipv4_addresses()
        if not addresses:
            pytest.skip("the host has no non-loopback IPv4 address")
        for address in addresses:
            result = invoke(client, "connect", {"host": address, "port": port, "timeout": 2})
            assert result["result"] != "connected", address


def test_concurrent_sandboxes_run_as_distinct_host_uids(client, service):
    """Two environments running at once: find each one's runtime on the host by its log stream."""
    with ThreadPoolExecutor(2) as executor:
        streams = list(executor.map(lambda _: invoke(client, "whoami", {"seconds": 1})["log_stream"], range(2)))
    assert len(set(streams)) == 2
    uids = {}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for stream in streams:
            if f"AWS_LAMBDA_LOG_STREAM_NAME={stream}".encode() in environ:
                real_uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
                uids.setdefault(stream, set()).add(real_uid)
    assert set(uids) == set(streams), "a sandbox's runtime was not found on the host"
    first, second = (uids[stream] for stream in streams)
    assert len(first) == len(second) == 1
    assert first != second
    low, high = service.uid_range
    assert all(low <= uid <= high for uid in first | second)
