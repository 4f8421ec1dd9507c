"""The seccomp deny-list (sandbox/seccomp.py): the filter builds, and probes run inside real bwrap sandboxes
(`bwrap --seccomp FD`, as an unprivileged host uid) get the denials while ordinary Python work still runs.

Every raw syscall probe is also run once without the filter: where the answer there differs, it is the
filter, not a missing capability, that produced the denial.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pyseccomp
import pytest

from sandbox import seccomp

BWRAP = shutil.which("bwrap")
PYTHON = next((p for p in ("/usr/bin/python3.11", "/usr/bin/python3") if Path(p).exists()), None)
SANDBOX_UID = 299999
SIGSYS_EXIT = 128 + signal.SIGSYS
x86_64_only = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 ABIs only")

needs_bwrap = pytest.mark.skipif(not (BWRAP and PYTHON), reason="needs bwrap and a system python3")

# Each probe makes one call and reports "ok" or the errno name. Raw syscalls go through libc's syscall()
# with 64-bit arguments (so high bits reach the kernel); numbers come from libseccomp on the host.
PROBE = r"""
import ctypes, errno, json, os, socket, subprocess, sys

args = json.loads(sys.argv[1])
NR = args["numbers"]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NEWUSER, SIGCHLD = 0x10000000, 17

def raw(name, *args):
    ctypes.set_errno(0)
    argv = [ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_ulong(a & (2**64 - 1)) for a in args]
    return libc.syscall(ctypes.c_long(NR[name]), *argv)

def call(name, *args):
    ret = raw(name, *args)
    if ret == -1:
        return errno.errorcode[ctypes.get_errno()]
    if name in ("socket", "userfaultfd", "io_uring_setup", "perf_event_open"):
        os.close(ret)
    return "ok"

def clone(flags):
    ret = raw("clone", flags | SIGCHLD, 0, 0, 0, 0)
    if ret == 0:
        os._exit(0)
    if ret > 0:
        os.waitpid(ret, 0x40000000)  # __WALL: the exit signal need not be SIGCHLD
        return "ok"
    return errno.errorcode[ctypes.get_errno()]

def in_child(probe):
    # for probes that change the calling process for good (a new user namespace)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, json.dumps(probe()).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    return json.loads(os.read(r, 4096))

def personality(value):
    result = call("personality", value)
    raw("personality", 0)
    return result

def unshare_command():
    run = subprocess.run(["unshare", "-U", "true"], capture_output=True, text=True)
    return "ok" if run.returncode == 0 else "failed: " + run.stderr.strip()

def fionread():
    r, w = os.pipe()
    os.write(w, b"abc")
    count = ctypes.c_int()
    result = call("ioctl", r, 0x541B, ctypes.addressof(count))
    return result if result != "ok" else count.value

PROBES = {
    "ptrace_traceme": lambda: call("ptrace", 0, 0, 0, 0),
    "ptrace_attach_pid1": lambda: call("ptrace", 16, 1, 0, 0),
    "process_vm_readv": lambda: call("process_vm_readv", os.getpid(), 0, 0, 0, 0, 0),
    "unshare_newuser": lambda: in_child(lambda: call("unshare", NEWUSER)),
    "unshare_command": unshare_command,
    "setns": lambda: call("setns", 0, 0),
    "mount_tmpfs": lambda: call("mount", b"none", b"/tmp", b"tmpfs", 0, 0),
    "bpf_prog_load": lambda: call("bpf", 5, 0, 0),
    "perf_event_open": lambda: call("perf_event_open", 0, 0, -1, -1, 0),
    "userfaultfd_user_mode": lambda: call("userfaultfd", 1),
    "keyctl_session_keyring": lambda: call("keyctl", 0, -3, 0),
    "add_key": lambda: call("add_key", b"user", b"probe", b"x", 1, -2),
    "io_uring_setup": lambda: call("io_uring_setup", 1, 0),
    "clone3": lambda: call("clone3", 0, 0),
    "clone_newuser_high_bits": lambda: clone((1 << 32) | NEWUSER),
    "personality_query": lambda: personality(0xFFFFFFFF),
    "personality_linux": lambda: personality(0),
    "personality_no_aslr": lambda: personality(0x0040000),
    "personality_read_implies_exec": lambda: personality(0x0400000),
    "personality_linux32": lambda: personality(0x8),
    "personality_fffffffe": lambda: personality(0xFFFFFFFE),
    "personality_high_bits": lambda: personality((1 << 32) | 0x0040000),
    "socket_unix": lambda: call("socket", socket.AF_UNIX, socket.SOCK_STREAM, 0),
    "socket_inet": lambda: call("socket", socket.AF_INET, socket.SOCK_STREAM, 0),
    "socket_inet6": lambda: call("socket", socket.AF_INET6, socket.SOCK_DGRAM, 0),
    "socket_netlink": lambda: call("socket", 16, socket.SOCK_RAW, 0),
    "socket_packet": lambda: call("socket", 17, socket.SOCK_RAW, 0),
    "socket_packet_high_bits": lambda: call("socket", (1 << 32) | 17, socket.SOCK_RAW, 0),
    "socket_alg": lambda: call("socket", 38, socket.SOCK_SEQPACKET, 0),
    "socket_vsock": lambda: call("socket", 40, socket.SOCK_STREAM, 0),
    "socket_unspec": lambda: call("socket", 0, socket.SOCK_STREAM, 0),
    "ioctl_tiocsti": lambda: call("ioctl", 0, 0x5412, b"x"),
    "ioctl_tiocsti_high_bits": lambda: call("ioctl", 0, 0x100005412, b"x"),
    "ioctl_tioclinux": lambda: call("ioctl", 0, 0x541C, b"\x06"),
    "ioctl_fionread": fionread,
}
for flag_name, flag in args["clone_flags"].items():
    PROBES["clone_" + flag_name] = lambda flag=flag: clone(flag)
for name in args["denied"]:
    PROBES["zero_args_" + name] = lambda name=name: call(name, 0, 0, 0, 0, 0, 0)

print(json.dumps({name: PROBES[name]() for name in args["run"]}))
"""

NAMESPACE_FLAGS = {name.removeprefix("CLONE_").lower(): flag for name, flag in seccomp.CLONE_NAMESPACE_FLAGS.items()}
KNOWN_DENIED = [n for n in seccomp.DENIED_SYSCALLS if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) >= 0]

EXPECTED = {
    "ptrace_traceme": "EPERM",
    "ptrace_attach_pid1": "EPERM",
    "process_vm_readv": "EPERM",
    "unshare_newuser": "EPERM",
    "setns": "EPERM",
    "mount_tmpfs": "EPERM",
    "bpf_prog_load": "EPERM",
    "perf_event_open": "EPERM",
    "userfaultfd_user_mode": "EPERM",
    "keyctl_session_keyring": "EPERM",
    "add_key": "EPERM",
    "io_uring_setup": "EPERM",
    "clone3": "ENOSYS",
    "clone_newuser_high_bits": "EPERM",
    "personality_query": "ok",
    "personality_linux": "ok",
    "personality_no_aslr": "EPERM",
    "personality_read_implies_exec": "EPERM",
    "personality_linux32": "EPERM",
    "personality_fffffffe": "EPERM",
    "personality_high_bits": "EPERM",
    "socket_unix": "ok",
    "socket_inet": "ok",
    "socket_inet6": "ok",
    "socket_netlink": "ok",
    "socket_packet": "EAFNOSUPPORT",
    "socket_packet_high_bits": "EAFNOSUPPORT",
    "socket_alg": "EAFNOSUPPORT",
    "socket_vsock": "EAFNOSUPPORT",
    "socket_unspec": "EAFNOSUPPORT",
    "ioctl_tiocsti": "EPERM",
    "ioctl_tiocsti_high_bits": "EPERM",
    "ioctl_tioclinux": "EPERM",
    "ioctl_fionread": 3,
    **{f"clone_{flag}": "EPERM" for flag in NAMESPACE_FLAGS},
    **{f"zero_args_{name}": "EPERM" for name in KNOWN_DENIED},
}
# Probes whose answer without the filter is different: the filter, not a missing capability, decides.
# (ptrace is left out: unfiltered, PTRACE_TRACEME/ATTACH would leave real tracing behind.)
DISCRIMINATING = [
    "process_vm_readv",
    "unshare_newuser",
    "setns",
    "perf_event_open",
    "userfaultfd_user_mode",
    "keyctl_session_keyring",
    "add_key",
    "io_uring_setup",
    "clone3",
    "clone_newuser",
    "clone_newuser_high_bits",
    "clone_newtime",
    "personality_no_aslr",
    "personality_read_implies_exec",
    "personality_linux32",
    "personality_fffffffe",
    "personality_high_bits",
    "socket_packet",
    "socket_packet_high_bits",
    "socket_vsock",
    "ioctl_tiocsti",
    "ioctl_tiocsti_high_bits",
    "ioctl_tioclinux",
]

WORKLOAD = r"""
import asyncio, json, multiprocessing, os, socket, ssl, subprocess, threading, time
from concurrent.futures import ThreadPoolExecutor

out = {}
with ThreadPoolExecutor(4) as pool:
    out["threads"] = sum(pool.map(lambda x: x * x, range(10)))
seen = []
thread = threading.Thread(target=seen.append, args=(threading.get_ident(),))
thread.start(); thread.join()
out["thread"] = len(seen)
shell = subprocess.run(["/bin/sh", "-c", "echo hi; uname -s"], capture_output=True, text=True, check=True)
out["subprocess"] = shell.stdout.split()
pid = os.fork()
if pid == 0:
    os._exit(7)
out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
with multiprocessing.Pool(2) as pool:
    out["pool"] = pool.map(abs, [-1, -2, -3])
out["json"] = json.loads(json.dumps({"a": [1, 2]}))
out["ssl"] = ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED
start = time.monotonic(); time.sleep(0.01)
out["time"] = time.time() > 1.6e9 and time.monotonic() - start >= 0.01
a, b = socket.socketpair(); a.sendall(b"ping"); out["socketpair"] = b.recv(4).decode()
with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
    peer, _ = server.accept(); client.sendall(b"tcp"); out["tcp"] = peer.recv(3).decode(); peer.close()
out["asyncio"] = asyncio.run(asyncio.sleep(0, result="ok"))
print(json.dumps(out))
"""


def run_sandboxed(code: str, *args: str, seccomp_filter: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -c code args…` in a minimal bwrap sandbox (every namespace unshared, new session, /usr read-only)
    started as an unprivileged host uid, with `--seccomp FD` unless told otherwise."""
    assert BWRAP and PYTHON
    fd = seccomp.filter_fd() if seccomp_filter else None
    argv = [
        BWRAP, "--unshare-all", "--die-with-parent", "--new-session",
        "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--ro-bind-try", "/etc/ssl", "/etc/ssl",
    ]  # fmt: skip
    if fd is not None:
        argv += ["--seccomp", str(fd)]
    as_user: dict = {"user": SANDBOX_UID, "group": SANDBOX_UID, "extra_groups": []} if os.geteuid() == 0 else {}
    try:
        return subprocess.run(
            [*argv, "--", PYTHON, "-c", code, *args],
            env={},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=20,
            pass_fds=(fd,) if fd is not None else (),
            **as_user,
        )
    finally:
        if fd is not None:
            os.close(fd)


def run_probes(names: list[str], *, seccomp_filter: bool = True) -> dict:
    syscalls = [*KNOWN_DENIED, "clone", "clone3", "socket", "ioctl", "personality"]
    args = {
        "numbers": {name: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) for name in syscalls},
        "denied": KNOWN_DENIED,
        "clone_flags": NAMESPACE_FLAGS,
        "run": names,
    }
    result = run_sandboxed(PROBE, json.dumps(args), seccomp_filter=seccomp_filter)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def pfc(syscall_filter) -> str:
    with tempfile.TemporaryFile("w+") as file:
        syscall_filter.export_pfc(file)
        file.seek(0)
        return file.read()


# -- the filter itself ---------------------------------------------------------------------------------------


def test_filter_builds_once_and_holds_every_rule():
    program = seccomp.filter_bytes()
    assert program and len(program) % 8 == 0  # struct sock_filter[]
    assert seccomp.filter_bytes() is program
    text = pfc(seccomp.build_filter())
    for name in [*KNOWN_DENIED, "clone", "clone3", "ioctl", "socket", "personality"]:
        assert f'filter for syscall "{name}"' in text, name
    assert "action ERRNO(38)" in text  # clone3 → ENOSYS
    assert "action ERRNO(97)" in text  # socket → EAFNOSUPPORT
    assert "# invalid architecture action\naction KILL;" in text


def test_unknown_syscall_names_are_skipped(monkeypatch):
    before = pfc(seccomp.build_filter())
    # not a syscall at all; a pseudo-syscall libseccomp knows but this architecture lacks (on x86_64/aarch64)
    monkeypatch.setattr(seccomp, "DENIED_SYSCALLS", (*seccomp.DENIED_SYSCALLS, "vhost", "socketcall"))
    assert pfc(seccomp.build_filter()) == before


def test_filter_fd_is_a_new_cloexec_fd_at_offset_0():
    fds = [seccomp.filter_fd(), seccomp.filter_fd()]
    try:
        assert fds[0] != fds[1]
        for fd in fds:
            assert not os.get_inheritable(fd)
            assert os.lseek(fd, 0, os.SEEK_CUR) == 0
            assert os.read(fd, 1 << 20) == seccomp.filter_bytes()
    finally:
        for fd in fds:
            os.close(fd)


# -- inside a real sandbox -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probed() -> dict:
    return run_probes(list(EXPECTED))


@needs_bwrap
@pytest.mark.parametrize("probe", list(EXPECTED))
def test_probe_under_the_filter(probed, probe):
    assert probed[probe] == EXPECTED[probe]


@needs_bwrap
def test_probes_answer_differently_without_the_filter(probed):
    unfiltered = run_probes(DISCRIMINATING, seccomp_filter=False)
    same = {name: unfiltered[name] for name in DISCRIMINATING if unfiltered[name] == probed[name]}
    assert not same, f"these answers do not depend on the filter: {same}"


@needs_bwrap
def test_unshare_command_fails():
    assert "unshare failed: Operation not permitted" in run_probes(["unshare_command"])["unshare_command"]
    assert run_probes(["unshare_command"], seccomp_filter=False)["unshare_command"] == "ok"


@needs_bwrap
def test_ordinary_python_work_still_runs():
    result = run_sandboxed(WORKLOAD)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "threads": 285,
        "thread": 1,
        "subprocess": ["hi", "Linux"],
        "fork": 7,
        "pool": [1, 2, 3],
        "json": {"a": [1, 2]},
        "ssl": True,
        "time": True,
        "socketpair": "ping",
        "tcp": "tcp",
        "asyncio": "ok",
    }


I386_GETPID = r"""
import ctypes, mmap
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes.fromhex("b814000000cd80c3"))  # mov eax, 20 (i386 getpid); int 0x80; ret
print("before", flush=True)
print("getpid", ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))())
"""
X32_GETPID = r"""
import ctypes
print("before", flush=True)
print("getpid", ctypes.CDLL(None).syscall(ctypes.c_long(0x40000000 | 39)))
"""


@needs_bwrap
@x86_64_only
@pytest.mark.parametrize("code", [I386_GETPID, X32_GETPID], ids=["i386-int80", "x32"])
def test_foreign_syscall_abis_are_killed(code):
    result = run_sandboxed(code)
    assert (result.returncode, result.stdout) == (SIGSYS_EXIT, "before\n"), result.stderr
    unfiltered = run_sandboxed(code, seccomp_filter=False)
    assert unfiltered.returncode == 0 and "getpid" in unfiltered.stdout, unfiltered.stderr
