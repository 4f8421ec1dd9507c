"""Network policy "on" (reference/sandbox.md §7 #5): outbound access through the service's egress proxy reaches
the outside, while the host itself (its addresses, its loopback services, this service's port), link-local
addresses and host abstract sockets stay unreachable. "Off": nothing at all.

The outside is a host of our own: a network namespace made here with a veth pair, serving HTTP.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from harness import assert_unharmed, call, module_service
from support import outside_host, wait_for_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 for a test host"
)

service = module_service()


@dataclass
class Outside:
    address: str  # the test host's address, outside this machine's own addresses
    gateway: str  # this machine's end of the link: one of the host's own addresses
    port: int


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    folder = tempfile.mkdtemp()
    with open(os.path.join(folder, "egress-target.txt"), "w") as target:
        target.write("reached the outside")
    port = 8080
    try:
        with outside_host() as host:
            server = host.popen(
                [sys.executable, "-m", "http.server", str(port), "--bind", host.address],
                cwd=folder,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_for_port(host.address, port, 10, "the test host serving")
                yield Outside(host.address, host.gateway, port)
            finally:
                server.kill()
                server.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def abstract_listener() -> Iterator[str]:
    """A host process listening on an abstract Unix socket (they belong to the network namespace)."""
    name = f"sandbox-runtime-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("\0" + name)
    sock.listen()
    try:
        yield name
    finally:
        sock.close()


def test_outbound_http_and_tunnels_reach_the_outside(service, outside):
    url = f"http://{outside.address}:{outside.port}/egress-target.txt"
    _, result = call(service, "egress-on", {"urls": [url], "tunnel": [outside.address, outside.port]})
    assert result["proxy"] == "http://127.0.0.1:3128"
    assert result[url] == [200, "reached the outside"]
    assert result["tunnel"] == [200, "reached the outside"]  # CONNECT, as HTTPS and other TCP use it
    assert_unharmed(service)


def test_the_host_itself_stays_unreachable_with_network_on(service, outside, abstract_listener):
    port = int(service.url.rsplit(":", 1)[1])
    refused = [
        f"http://{outside.gateway}:{port}/health",  # this service, at one of the host's own addresses
        f"http://127.0.0.1:{port}/health",  # host loopback (as the proxy would see it) is NO_PROXY: stays inside
        "http://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        f"http://[::ffff:{outside.gateway}]:{port}/health",  # an IPv4-mapped spelling of a host address
    ]
    _, result = call(
        service,
        "egress-on",
        {"urls": refused, "direct": [outside.address, outside.port], "abstract": abstract_listener},
    )
    assert result[refused[0]][0] == 403, result
    assert result[refused[1]][0] == "URLError", result  # 127.0.0.1 inside the sandbox: nothing listens there
    assert result[refused[2]][0] == 403, result
    assert result[refused[3]][0] == 403, result
    assert result["direct"] == "Network is unreachable"  # no interface of its own: only the proxy goes out
    assert result["abstract"] == "Connection refused"
    assert_unharmed(service)


def test_the_proxy_refuses_loopback_when_asked_explicitly(service):
    """A handler that ignores NO_PROXY and asks the proxy for the host's loopback gets 403."""
    port = int(service.url.rsplit(":", 1)[1])
    _, result = call(service, "egress-on", {"tunnel": ["127.0.0.1", port]})
    assert result["tunnel"] == ["OSError", "Tunnel connection failed: 403 Forbidden"], result
    assert_unharmed(service)


def test_network_off_has_no_way_out(service, outside):
    url = f"http://{outside.address}:{outside.port}/egress-target.txt"
    _, result = call(
        service,
        "egress-off",
        {"urls": [url], "tunnel": [outside.address, outside.port], "direct": [outside.address, outside.port]},
    )
    assert result["proxy"] is None
    assert result[url][0] == "URLError"
    assert result["tunnel"][0] == "ConnectionRefusedError"  # no proxy listens in this sandbox
    assert result["direct"] == "Network is unreachable"
    assert_unharmed(service)


def test_one_sandbox_holds_a_bounded_number_of_proxy_connections():
    """Each proxied connection costs the service two descriptors: past the cap, the proxy answers 503."""
    import asyncio

    from sandbox.egress import EgressPolicy, serve

    async def scenario() -> bytes:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        server = await serve(listener, EgressPolicy(), max_connections=2)
        port = listener.getsockname()[1]
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.05)  # both are being served (waiting for their request line)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(reader.read(), 5)
        for _, held_writer in held:
            held_writer.close()
        writer.close()
        server.close()
        return answer

    assert asyncio.run(scenario()).startswith(b"HTTP/1.1 503 Service Unavailable")
