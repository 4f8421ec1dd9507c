"""The network a hostile handler sees (reference/sandbox.md §7 #4, #5): only its own loopback, where only its
Runtime API listens. No route out, no host address, no host loopback service, no host abstract socket."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
from harness import assert_unharmed, module_service, probe

service = module_service()


def _host_addresses() -> list[str]:
    """The host's own addresses other than loopback: IPv4 from the FIB's LOCAL /32 entries, global IPv6."""
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    v4 = {lines[i - 1].split()[-1] for i, line in enumerate(lines) if "/32 host LOCAL" in line and i}
    v6 = set()
    if Path("/proc/net/if_inet6").exists():
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw, *_, device = line.split()
            if device != "lo" and not raw.startswith("fe80"):
                v6.add(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw)))
    return sorted(a for a in v4 if not a.startswith("127.")) + sorted(v6)


def test_only_loopback_and_the_runtime_api(service):
    """The probe can connect where it is allowed: its own Runtime API at 127.0.0.1:9001."""
    seen = probe(service, "network", tcp=[["127.0.0.1", 9001]])
    assert seen["interfaces"] == ["lo"]
    assert seen["tcp 127.0.0.1 9001"] == "connected"
    assert_unharmed(service)


def test_no_egress(service):
    """#4: TCP and UDP to the internet have no route; DNS does not resolve."""
    seen = probe(
        service,
        "network",
        tcp=[["1.1.1.1", 80], ["1.1.1.1", 443], ["8.8.8.8", 53], ["2606:4700:4700::1111", 443]],
        udp=[["1.1.1.1", 53], ["8.8.8.8", 53], ["2606:4700:4700::1111", 53]],
        dns=["example.com", "lambda.us-east-1.amazonaws.com"],
    )
    del seen["interfaces"]
    unreachable = {key: value for key, value in seen.items() if not key.startswith("dns")}
    assert unreachable == dict.fromkeys(unreachable, "ENETUNREACH")
    assert seen["dns example.com"] == seen["dns lambda.us-east-1.amazonaws.com"] == "gaierror"
    assert_unharmed(service)


def test_host_addresses_are_not_reachable(service):
    """#4: the host's own non-loopback addresses, where a host server listens, have no route either."""
    addresses = _host_addresses()
    if not addresses:
        pytest.skip("the host has no non-loopback address")
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as listener:
        port = listener.getsockname()[1]
        for address in addresses:
            with socket.create_connection((address, port), timeout=5):
                pass  # reachable from the host
        seen = probe(service, "network", tcp=[[address, port] for address in addresses])
    del seen["interfaces"]
    assert seen == {f"tcp {address} {port}": "ENETUNREACH" for address in addresses}
    assert_unharmed(service)


def test_host_loopback_and_abstract_sockets_are_not_reachable(service):
    """#5: the service's own port, a host server on 127.0.0.1 and a host abstract Unix socket all answer
    the host, and none answers the sandbox (its loopback and abstract namespace are its own)."""
    name = f"sandbox-runtime-test-{uuid.uuid4().hex}"
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as abstract,
    ):
        abstract.bind("\0" + name)
        abstract.listen()
        port = listener.getsockname()[1]
        for target in (("127.0.0.1", port), ("127.0.0.1", service.port)):
            with socket.create_connection(target, timeout=5):
                pass
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect("\0" + name)
        seen = probe(service, "network", tcp=[["127.0.0.1", service.port], ["127.0.0.1", port]], abstract=[name])
    assert seen[f"tcp 127.0.0.1 {service.port}"] == "ECONNREFUSED"
    assert seen[f"tcp 127.0.0.1 {port}"] == "ECONNREFUSED"
    assert seen[f"abstract {name}"] == "ECONNREFUSED"
    assert_unharmed(service)
