"""Sockets made inside another process's network namespace: a listener (the Runtime API) and a client
connection (Telemetry API deliveries).

The sandbox has its own network namespace with only `lo`. The service (root) enters that namespace
from one thread, binds 127.0.0.1:9001 there and comes back: the sandbox's unmodified runtime
client then reaches the service at AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001, and each accepted
connection is known to come from that sandbox alone. No process runs inside for this.
"""

from __future__ import annotations

import ctypes
import os
import socket

_CLONE_NEWNET = 0x40000000
_IP_FREEBIND = 15  # <linux/in.h>; not exported by the socket module
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def listen_in_netns(pid: int, host: str, port: int, backlog: int = 64) -> socket.socket:
    """Bind and listen on host:port inside the network namespace of `pid`. Call from a worker thread:
    the namespace switch is per thread and is undone before returning."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            # An explicit IPPROTO_TCP: asyncio only sets TCP_NODELAY on sockets that say so, and
            # without it every keep-alive answer waits ~40 ms on Nagle + delayed ACK.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # bwrap brings `lo` up in the sandbox while we bind here; until it is up 127.0.0.1
                # may not be an address of the namespace yet (EADDRNOTAVAIL). Bind regardless.
                sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
                sock.bind((host, port))
                sock.listen(backlog)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
        finally:
            # Were this to fail, the thread would stay in the sandbox's namespace: the process
            # cannot be trusted to carry on, so it stops rather than spawn more sandboxes from there.
            try:
                _setns(own)
            except OSError:  # pragma: no cover - would need a kernel bug
                os.abort()
        return sock
    finally:
        os.close(own)


def connect_in_netns(netns_fd: int, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to host:port inside the network namespace `netns_fd` names (a namespace descriptor,
    or the pidfd of a process in it: one that cannot name another process once that one is gone), e.g. a
    Telemetry API subscriber's HTTP server at 127.0.0.1:<port> in a sandbox. Call from a worker thread:
    only the socket is made inside (a socket stays in the namespace it was made in); the thread
    switches back before connecting. The socket is returned connected and non-blocking."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(netns_fd)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        finally:
            try:
                _setns(own)
            except OSError:  # pragma: no cover - would need a kernel bug
                os.abort()
    finally:
        os.close(own)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
