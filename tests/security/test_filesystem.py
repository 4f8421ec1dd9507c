"""The filesystem a hostile handler sees (reference/sandbox.md §7 #1-#3, #20, #21): no host files, nothing
writable but /tmp and /dev/shm, both sized, the memory cgroup bounding the total, no setuid gains, no cores."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO
from harness import TEMPLATE, assert_unharmed, call, module_service, probe, report
from support import request_id, tail

service = module_service()
MB = 1024 * 1024


def _state_dir(service) -> str:
    return next(e["state_dir"] for e in service.log_events() if e.get("event") == "service.ready")


def test_host_files_are_not_there(service):
    """#1: host secrets, the service's own code, template and state are not mounted at all."""
    paths = [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/ssl/private",
        "/etc/machine-id",
        "/etc/hostname",
        "/root",
        "/root/.bashrc",
        "/root/.aws/credentials",
        "/home",
        "/sys",
        str(REPO / "runtime_api" / "config.py"),
        str(TEMPLATE),
        _state_dir(service),
        "/var/cache/sandbox-runtime",
        f"/proc/{service.proc.pid}/environ",
    ]
    assert Path("/etc/shadow").exists() and Path(paths[10]).exists()
    assert probe(service, "read", paths=paths) == dict.fromkeys(paths, "ENOENT")
    assert_unharmed(service)


def test_etc_is_synthetic(service):
    """#1: /etc/passwd and /etc/group are the sandbox's own, not the host's."""
    seen = probe(service, "read", paths=["/etc/passwd", "/etc/group"])
    assert "sbx_user1051:x:993:990:" in seen["/etc/passwd"]
    users = {line.split(":")[0] for line in seen["/etc/passwd"].splitlines() if line}
    groups = {line.split(":")[0] for line in seen["/etc/group"].splitlines() if line}
    assert users <= {"root", "sbx_user1051", "nobody"}, users
    assert groups <= {"root", "sbx_user1051", "nogroup"}, groups
    assert_unharmed(service)


def test_nothing_outside_tmp_is_writable(service):
    """#2: the root, /usr, /etc, /var/task, /var/runtime, /opt and /dev are read-only (new names only:
    a failing test must not damage host files)."""
    paths = ["/x", "/usr/x", "/usr/bin/x", "/etc/x", "/etc/passwd", "/etc/ssl/certs/x", "/var/x"]
    paths += ["/var/task/x", "/var/runtime/x", "/opt/x", "/dev/x"]
    seen = probe(service, "write", paths=[*paths, "/proc/sys/kernel/hostname", "/tmp/ok", "/dev/shm/ok"])
    assert {path: seen[path] for path in paths} == dict.fromkeys(paths, "EROFS")
    assert seen["mkdir /newdir"] == seen["symlink /newlink"] == "EROFS"
    assert seen["/proc/sys/kernel/hostname"] in ("EACCES", "EROFS")
    assert seen["/tmp/ok"] == seen["/dev/shm/ok"] == "written"
    assert_unharmed(service)


def test_tmp_and_shm_fill_up_at_their_size_and_root_is_read_only(service):
    """#3: /tmp (EphemeralStorage 512 MB, under a 1024 MB memory limit) and /dev/shm (4 MB) say ENOSPC at
    their size; the root says EROFS."""
    filled = probe(service, "fill", function="fill")
    assert filled["tmp"]["error"] == "ENOSPC"
    assert 504 * MB <= filled["tmp"]["bytes"] <= 512 * MB, filled
    assert filled["shm"] == {"bytes": 4 * MB, "error": "ENOSPC"}
    assert filled["root"] == {"bytes": 0, "error": "EROFS"}
    assert_unharmed(service)


def test_memory_cgroup_bounds_tmpfs(service):
    """#3: tmpfs pages count against the memory limit: filling a 512 MB /tmp under 128 MB is an OOM kill."""
    response, result = call(service, "tmp-bomb", LogType="Tail")
    assert result["errorType"] == "Runtime.OutOfMemory", result
    fields = report(tail(response), request_id(response))
    assert fields["Memory Size"] == "128 MB"
    assert 120 <= int(fields["Max Memory Used"].split()[0]) <= 129, fields
    assert_unharmed(service)


def test_setuid_binaries_gain_nothing(service):
    """#20: no new privileges, no capabilities, /usr mounted nosuid: su, passwd, mount, chfn and newgrp fail."""
    seen = probe(service, "setuid")
    identity = seen["identity"]
    assert (identity["uid"], identity["euid"], identity["NoNewPrivs"]) == (993, 993, "1"), identity
    assert identity["CapEff"] == identity["CapPrm"] == "0000000000000000", identity
    assert "nosuid" in seen["/usr options"].split(","), seen["/usr options"]
    for command in ("su", "passwd", "mount", "chfn", "newgrp"):
        assert seen[command]["rc"] not in (0, None), (command, seen[command])
        assert seen[command]["output"] != "0", (command, seen[command])
    assert seen["id -u after"] == {"rc": 0, "output": "993"}
    assert_unharmed(service)


def test_crashes_leave_no_core_dump(service):
    """#21: RLIMIT_CORE is 0 and cannot be raised; a SIGSEGV leaves no core file."""
    seen = probe(service, "core")
    assert seen["RLIMIT_CORE"] == [0, 0]
    assert seen["raise RLIMIT_CORE"] == "ValueError"  # above the hard limit
    assert (seen["signal"], seen["core dumped"], seen["new files in /tmp"]) == (11, False, []), json.dumps(seen)
    assert_unharmed(service)
