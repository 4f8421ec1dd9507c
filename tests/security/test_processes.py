"""Processes, identities and the kernel as a hostile handler sees them (reference/sandbox.md §7 #6-#8,
#14-#17, #22, #23), all through the real service: the seccomp filter's own tests are in test_seccomp.py."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

from harness import (
    HOST_SECRET,
    NUMBERS,
    assert_unharmed,
    module_service,
    new_tag,
    probe,
    sandbox_uid,
    tagged,
)

service = module_service()


def test_runs_as_lambdas_user_with_nothing_extra(service):
    seen = probe(service, "identity")
    assert (seen["uid"], seen["euid"], seen["gid"], seen["groups"]) == (993, 993, 990, [])
    assert seen["hostname"] == "sandbox"
    assert seen["Seccomp"] == "2"  # a filter is loaded
    assert_unharmed(service)


def test_host_processes_are_invisible(service):
    """#6: /proc and ps show the sandbox's init (bwrap), the runtime and the probe's own ps; nothing else."""
    seen = probe(service, "processes")
    proc = {int(pid): cmdline for pid, cmdline in seen["proc"].items()}
    assert sorted(proc) == [1, 2], proc
    assert proc[1].startswith("/usr/bin/bwrap ") and "sandbox_bootstrap" in proc[2]
    ps_rows = seen["ps"]["output"].splitlines()[1:]
    assert len(ps_rows) == 3, ps_rows  # bwrap, the runtime, ps
    assert all(row.split()[1] == "993" for row in ps_rows), ps_rows
    everything = json.dumps(seen)
    for host_only in ("runtime_api", "pytest", str(service.port)):
        assert host_only not in everything
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) > len(proc)
    assert_unharmed(service)


def test_ptrace_and_process_vm_are_denied(service):
    """#7: PTRACE_ATTACH/SEIZE of pid 1 or of a child, PTRACE_TRACEME, process_vm_readv/writev, pidfd_getfd.

    /proc/1/mem stays open to the handler (same uid, pid 1 dumpable: the kernel's ptrace access check
    passes), so pid 1 must hold nothing the handler lacks: same uid, no capabilities, no new privileges,
    the same seccomp filter. Then reaching its memory gains nothing."""
    seen = probe(service, "ptrace", numbers=NUMBERS)
    denied = ["attach pid 1", "seize pid 1", "attach own child", "traceme"]
    denied += ["process_vm_readv pid 1", "process_vm_writev child", "pidfd_getfd"]
    assert {key: seen[key] for key in denied} == dict.fromkeys(denied, "EPERM")
    assert seen["pid 1 status"] == {
        "Uid": "993\t993\t993\t993",
        "CapPrm": "0000000000000000",
        "CapEff": "0000000000000000",
        "CapBnd": "0000000000000000",
        "NoNewPrivs": "1",
        "Seccomp": "2",
    }
    assert_unharmed(service)


def test_environment_holds_no_host_secret(service):
    """#8: the service runs with HOST_SECRET=hunter2; no process of the sandbox shows it, nor any host
    variable: /proc/self/environ, /proc/1/environ (bwrap's, exec'd with an empty environment), cmdlines."""
    seen = probe(service, "environ")
    assert "HOST_SECRET" not in json.dumps(seen) and HOST_SECRET not in json.dumps(seen)
    assert seen["/proc/1/environ"] == ""
    assert "bwrap" in seen["/proc/1/cmdline"]
    host_values = {f"{key}={value}" for key, value in os.environ.items() if key not in {"PATH", "LANG", "TZ"}}
    for where in ("/proc/self/environ", "/proc/1/environ", "/proc/1/cmdline"):
        assert not [pair for pair in host_values if pair in seen[where].replace("\0", "\n").splitlines()], where
    assert_unharmed(service)


def test_signals_reach_only_the_sandbox(service):
    """#14: kill(-1, SIGKILL) kills the sandbox's own processes only; kills of host pids, even of a process
    running as the sandbox's own host uid, find nothing (ESRCH); the service and the runtime live on."""
    tag = new_tag("kill")
    probe(service, "identity", tag=tag)
    uid = sandbox_uid(tag)
    runtime = tagged(tag)
    same_uid = subprocess.Popen(["sleep", "60"], user=uid, group=uid, extra_groups=[])
    try:
        host_pids = [service.proc.pid, os.getpid(), same_uid.pid]
        seen = probe(service, "kill", host_pids=host_pids)
        assert seen["kill -1"] == "ok" and seen["own child"] == -9, seen
        assert seen["kill pid 1"] == "ok"  # accepted, and ignored: the namespace's init is immune from inside
        # The sandbox's init and the runtime itself (pid 2 under bwrap; under Docker's init, later).
        assert len(seen["pids after"]) == 2 and seen["pids after"][0] == 1, seen
        assert {str(pid): seen[str(pid)] for pid in host_pids} == dict.fromkeys(map(str, host_pids), "ESRCH")
        assert same_uid.poll() is None, "a host process of the sandbox's uid was killed"
        assert tagged(tag) == runtime  # the same runtime survived its own kill(-1)
    finally:
        same_uid.kill()
        same_uid.wait()
    assert_unharmed(service)


def test_no_terminal_injection(service):
    """#15: no controlling terminal (new session); TIOCSTI and TIOCLINUX are EPERM, even on a pty the
    handler made its own controlling terminal."""
    seen = probe(service, "tty")
    assert seen.pop("open /dev/tty") == "ENXIO"
    assert seen == dict.fromkeys(seen, "EPERM"), seen
    assert_unharmed(service)


def test_no_new_namespaces_or_mounts(service):
    """#16: unshare(1), unshare(2) with CLONE_NEWUSER/NEWNS, os.unshare (3.12+), mount(2) and mount(8)."""
    seen = probe(service, "namespaces", numbers=NUMBERS)
    for command in ("unshare -U", "unshare -m", "unshare -n"):
        assert seen[command]["rc"] != 0 and "Operation not permitted" in seen[command]["output"], seen[command]
    assert seen["os.unshare"] in ("EPERM", "unavailable")
    assert seen["unshare(CLONE_NEWUSER)"] == seen["unshare(CLONE_NEWNS)"] == seen["mount tmpfs"] == "EPERM"
    assert seen["mount command"]["rc"] != 0 and "must be superuser" in seen["mount command"]["output"]
    assert_unharmed(service)


def test_kernel_attack_surface_is_closed(service):
    """#17: bpf, perf_event_open, userfaultfd, io_uring, keyrings, syslog, modules; raw packet, crypto and
    vsock sockets. Netlink stays (it sees only the sandbox's own network namespace)."""
    seen = probe(service, "kernel", numbers=NUMBERS)
    assert seen.pop("AF_NETLINK") == "ok"
    families = {name: seen.pop(name) for name in ("AF_PACKET", "AF_ALG", "AF_VSOCK")}
    assert families == dict.fromkeys(families, "EAFNOSUPPORT")
    assert seen == dict.fromkeys(seen, "EPERM"), seen
    assert_unharmed(service)


def test_no_keyring_or_kernel_log(service):
    """#23: keyctl and the kernel log (dmesg, syslog(2), /proc/kmsg, /dev/kmsg) are closed; /proc/keys is empty."""
    seen = probe(service, "kernel_log", numbers=NUMBERS)
    assert seen["dmesg"]["rc"] != 0 and "Operation not permitted" in seen["dmesg"]["output"], seen["dmesg"]
    assert seen["syslog"] == seen["keyctl show"] == "EPERM"
    assert seen["/proc/kmsg"] == "EACCES" and seen["/dev/kmsg"] == "ENOENT"
    assert seen["/proc/keys"] == ""
    assert_unharmed(service)


def test_concurrent_sandboxes_cannot_reach_each_other(service):
    """#22: two functions running at once run as different host uids; neither sees the other's processes,
    can signal or trace them, reach its abstract socket or read its /tmp."""
    sides = {"cross-a": new_tag("crossa"), "cross-b": new_tag("crossb")}
    secrets = {name: uuid.uuid4().hex for name in sides}

    def visit(name: str, peer: dict | None = None, hold: float = 0) -> dict:
        args = {"secret": secrets[name], "hold": hold, "peer": peer, "numbers": NUMBERS}
        return probe(service, "cross", function=name, tag=sides[name], **args)

    with ThreadPoolExecutor(2) as executor:
        first = [executor.submit(visit, name, None, 1.5) for name in sides]
        for tag in sides.values():
            sandbox_uid(tag)  # both are running now, holding for 1.5 s
        hosts = {name: tagged(tag) for name, tag in sides.items()}
        assert [future.result()["own secret"] for future in first] == list(secrets.values())
    (uid_a, pid_a), (uid_b, pid_b) = hosts["cross-a"][0], hosts["cross-b"][0]
    assert uid_a != uid_b
    low, high = service.uid_range
    assert low <= uid_a <= high and low <= uid_b <= high

    peers = {
        "cross-a": {"tag": sides["cross-b"], "pid": pid_b, "secret": secrets["cross-b"]},
        "cross-b": {"tag": sides["cross-a"], "pid": pid_a, "secret": secrets["cross-a"]},
    }
    with ThreadPoolExecutor(2) as executor:
        seen = dict(zip(sides, executor.map(lambda name: visit(name, peers[name]), sides), strict=True))
    for name, result in seen.items():
        assert result == {
            "own secret": secrets[name],
            "peer tag visible": False,
            "peer pid in /proc": False,
            "signal peer": "ESRCH",
            "ptrace peer": "EPERM",
            "connect peer listener": "ECONNREFUSED",
            "peer secret seen": False,
        }, name
    assert tagged(sides["cross-a"]) == [(uid_a, pid_a)] and tagged(sides["cross-b"]) == [(uid_b, pid_b)]
    assert_unharmed(service)
