"""Outbound network for sandboxes that may have it: an HTTP proxy the service serves inside the sandbox.

A sandbox never gets a network interface of its own: its network namespace has only `lo`. When a
sandbox may reach the internet, the service also listens on 127.0.0.1:3128 *inside* that namespace
(like the Runtime API) and serves an HTTP proxy there: CONNECT for TLS and anything else, and plain
`http://` requests. The sandbox is given HTTP_PROXY/HTTPS_PROXY, which boto3, requests, urllib, pip
and curl honour. Names are resolved and connections made by the service, which refuses destinations
on the host itself (loopback, the host's own addresses: its services, this service's port), link-local
ones (169.254.169.254, cloud metadata) and multicast. Host abstract Unix sockets stay unreachable
because the sandbox keeps its own network namespace (`--share-net` is never used).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket

PROXY_HOST = "127.0.0.1"
PROXY_PORT = 3128
_MAX_HEAD = 64 * 1024
_CONNECT_TIMEOUT = 10.0
_HOP_BY_HOP = {"proxy-connection", "proxy-authorization", "connection", "keep-alive"}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressPolicy:
    """Which resolved addresses a sandbox may connect to."""

    def allows(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return not (
            address.is_loopback
            or address.is_link_local
            or address.is_multicast
            or address.is_unspecified
            or address.is_reserved
            or _is_host_address(address)
        )


def _is_host_address(address: Address) -> bool:
    """Whether `address` belongs to this host now (interfaces come and go): only a local address can
    be bound."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


async def serve(listener: socket.socket, policy: EgressPolicy, max_connections: int = 128) -> asyncio.Server:
    """Serve the proxy on a listener made inside a sandbox's network namespace. Each proxied connection
    costs the service two descriptors, so one sandbox may hold at most `max_connections` at once."""
    active = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= max_connections:
            _refuse(writer, 503, f"at most {max_connections} connections through the proxy at once")
            writer.close()
            return
        active += 1
        try:
            await _proxy(reader, writer, policy)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            active -= 1
            writer.close()

    return await asyncio.start_server(handle, sock=listener, limit=_MAX_HEAD)


async def _proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, policy: EgressPolicy) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, version = request_line.split(" ", 2)
    if method == "CONNECT":
        host, port = _split_host_port(target, 443)
        upstream = await _open(host, port, policy, writer)
        if upstream is None:
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await _pipe(reader, writer, *upstream)
        return
    if not target.startswith("http://"):
        return _refuse(writer, 400, "a proxy request needs an absolute http:// URL or CONNECT")
    authority, _, path = target[len("http://") :].partition("/")
    host, port = _split_host_port(authority, 80)
    upstream = await _open(host, port, policy, writer)
    if upstream is None:
        return
    headers = [line for line in header_lines if line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
    forwarded = "\r\n".join([f"{method} /{path} {version}", *headers, "Connection: close", "", ""])
    upstream[1].write(forwarded.encode("latin-1"))
    await _pipe(reader, writer, *upstream)


async def _open(
    host: str, port: int, policy: EgressPolicy, client: asyncio.StreamWriter
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), _CONNECT_TIMEOUT)
    except (TimeoutError, OSError):
        _refuse(client, 502, f"cannot resolve {host}")
        return None
    allowed = [info for info in infos if policy.allows(ipaddress.ip_address(str(info[4][0]).split("%")[0]))]
    if not allowed:
        _refuse(client, 403, f"{host} is not reachable from a sandbox (host-local or link-local address)")
        return None
    for family, _kind, proto, _, address in allowed:
        with contextlib.suppress(OSError, TimeoutError):
            return await asyncio.wait_for(
                asyncio.open_connection(str(address[0]), int(address[1]), family=family, proto=proto),
                _CONNECT_TIMEOUT,
            )
    _refuse(client, 502, f"cannot connect to {host}:{port}")
    return None


async def _pipe(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                if sink.can_write_eof():
                    sink.write_eof()

    try:
        await asyncio.gather(copy(client_reader, upstream_writer), copy(upstream_reader, client_writer))
    finally:
        upstream_writer.close()


def _refuse(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    body = (reason + "\n").encode()
    phrase = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway", 503: "Service Unavailable"}[status]
    writer.write(
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )


def _split_host_port(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):  # [v6]:port
        host, _, rest = authority[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit():
        return authority, default_port
    return host, int(port)
