"""The escape-and-abuse checklist (reference/sandbox.md §7) against the Docker backend (SANDBOX_ISOLATION=docker,
sandbox/docker.py): each sandbox is a hardened container pair, a `--network none` holder of the network
namespace and the function container joined to it, run as a distinct host uid of the service's range.

Where a bwrap test of this folder applies to containers unchanged it is imported and runs again here, under
this module's Docker `service`. Those that check bwrap-specific details have a Docker version below instead:
the uid (993 inside bwrap's user namespace; containers run as the host uid itself), pid 1 (bwrap there,
Docker's init here), the cgroup folders the service makes for bwrap (Docker makes its own per container),
/root and /sys (absent there; an empty folder of the base image and an empty tmpfs here), /dev (read-only
there; Docker's tmpfs, root's 0755, here).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import test_egress
from conftest import REPO, ServiceProcess, sandbox_processes
from docker.errors import NotFound
from docker_support import DOCKER_HOST, containers_of_service, docker_engine  # noqa: F401 - the fixture
from harness import (
    HOST_SECRET,
    NUMBERS,
    ONE_CPU_LESS,
    SERVICE_ENV,
    TEMPLATE,
    PidsWatch,
    assert_unharmed,
    call,
    module_service,
    new_tag,
    probe,
    processes_of,
    report,
    sandbox_uid,
    tagged,
)
from support import request_id, tail, wait_for

# Applies unchanged (#1 synthetic /etc, #3 /tmp and /dev/shm sizes and the memory limit over tmpfs, #21 cores).
# Not reused: test_host_files_are_not_there (/root and /sys are empty folders here), test_nothing_outside_tmp_
# is_writable (/dev says EACCES), test_setuid_binaries_gain_nothing (uid 993): Docker versions below.
from test_filesystem import (
    test_crashes_leave_no_core_dump,
    test_etc_is_synthetic,
    test_memory_cgroup_bounds_tmpfs,
    test_tmp_and_shm_fill_up_at_their_size_and_root_is_read_only,
)

# Applies unchanged (pids.max over threads, RLIMIT_NOFILE, #10 memory bombs, warm neighbours). Not reused:
# test_health_reports_cgroup_limits and the fork bomb, spin, flood and daemon tests find their sandbox through
# the cgroup folders the service makes for bwrap; test_cpu_quota_caps_a_busy_loop starts a bwrap service.
from test_limits import (
    test_memory_bomb_is_an_out_of_memory_error,
    test_open_files_are_limited,
    test_thread_bomb_stops_at_pids_max,
    test_warm_environments_survive_their_neighbours_bombs,
)

# #5 with the network on (the probe function's default): the holder's namespace has only its loopback. Not reused:
# test_no_egress and test_host_addresses_are_not_reachable expect ENETUNREACH from IPv6 too, where Docker
# disables IPv6 in the namespace (EADDRNOTAVAIL): Docker versions below.
from test_network import (
    _host_addresses,
    test_host_loopback_and_abstract_sockets_are_not_reachable,
    test_only_loopback_and_the_runtime_api,
)

# Applies unchanged (#15-#17, #22, #23). Not reused: test_runs_as_lambdas_user_with_nothing_extra (uid 993),
# the process, ptrace, environment and signal tests (pid 1 is bwrap there): Docker versions below.
from test_processes import (
    test_concurrent_sandboxes_cannot_reach_each_other,
    test_kernel_attack_surface_is_closed,
    test_no_keyring_or_kernel_log,
    test_no_new_namespaces_or_mounts,
    test_no_terminal_injection,
    test_signals_reach_only_the_sandbox,
)

pytestmark = pytest.mark.usefixtures("docker_engine")

service = module_service(SANDBOX_ISOLATION="docker")
bomb_service = module_service("bomb_service", SANDBOX_ISOLATION="docker", SANDBOX_CPU_QUOTA=ONE_CPU_LESS)
DOCKER_ENV = {**SERVICE_ENV, "SANDBOX_ISOLATION": "docker"}
ROLE_LABEL = "sandbox-runtime.role"
MB = 1024 * 1024

__all__ = [  # the reused tests, so that the linters see them used
    "test_concurrent_sandboxes_cannot_reach_each_other",
    "test_crashes_leave_no_core_dump",
    "test_etc_is_synthetic",
    "test_host_loopback_and_abstract_sockets_are_not_reachable",
    "test_kernel_attack_surface_is_closed",
    "test_memory_bomb_is_an_out_of_memory_error",
    "test_memory_cgroup_bounds_tmpfs",
    "test_no_keyring_or_kernel_log",
    "test_no_new_namespaces_or_mounts",
    "test_no_terminal_injection",
    "test_only_loopback_and_the_runtime_api",
    "test_open_files_are_limited",
    "test_signals_reach_only_the_sandbox",
    "test_thread_bomb_stops_at_pids_max",
    "test_tmp_and_shm_fill_up_at_their_size_and_root_is_read_only",
    "test_warm_environments_survive_their_neighbours_bombs",
]


# -- finding a sandbox's containers ------------------------------------------------------------------------------


@contextlib.contextmanager
def _api() -> Iterator:
    client = docker.DockerClient(base_url=DOCKER_HOST, version="auto", timeout=60)
    try:
        yield client.api
    finally:
        client.close()


def _inspect(container: str) -> dict | None:
    with _api() as api:
        try:
            return api.inspect_container(container)
        except NotFound:
            return None


def _function_containers(service: ServiceProcess) -> dict[str, dict]:
    """The service's function containers (each has a holder beside it), by id: their `docker inspect`."""
    found = {}
    for container in containers_of_service(service.proc.pid):
        info = _inspect(container)
        if info is not None and info["Config"]["Labels"].get(ROLE_LABEL) == "function":
            found[container] = info
    return found


@dataclass
class Sandbox:
    """A function container and its holder, as the host sees them."""

    container: str
    holder: str
    uid: int  # the host uid both run as
    pid: int  # host pid of the function container's init
    # cgroup path by controller ("" for v2's one hierarchy), read when found: a pid read later may have
    # been reused by then (a fork bomb churns through pids), and a process of the host's root cgroup
    # would send the test to the root's files
    memberships: dict[str, str]

    @classmethod
    def of(cls, container: str, info: dict) -> Sandbox:
        network = info["HostConfig"]["NetworkMode"]
        assert network.startswith("container:"), network
        uid, _, gid = info["Config"]["User"].partition(":")
        assert uid == gid, info["Config"]["User"]
        pid = info["State"]["Pid"]
        memberships = {}
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(","):
                memberships[name] = path.lstrip("/")
        return cls(container, network.removeprefix("container:"), int(uid), pid, memberships)

    @property
    def in_its_cgroup(self) -> bool:
        """Whether the container's init was in a pids cgroup of its own (not the root) when it was found."""
        return bool(self.memberships.get("pids", self.memberships.get("")))

    def cgroup(self, controller: str) -> Path:
        """The container's own cgroup folder for `controller` (Docker made it; v1 or v2)."""
        if controller in self.memberships:
            return Path("/sys/fs/cgroup") / controller / self.memberships[controller]
        return Path("/sys/fs/cgroup") / self.memberships[""]


def sandbox_of(service: ServiceProcess, uid: int) -> Sandbox:
    """The running sandbox of host uid `uid` (a warm environment)."""
    found = [
        Sandbox.of(container, info)
        for container, info in _function_containers(service).items()
        if info["Config"]["User"] == f"{uid}:{uid}"
    ]
    assert len(found) == 1, found
    return found[0]


@dataclass
class Run:
    """An invocation in flight: its future (response, payload; the response carries `elapsed`) and its sandbox."""

    future: Future
    sandbox: Sandbox


@contextlib.contextmanager
def running(service: ServiceProcess, name: str, tag: str, event: dict | None = None) -> Iterator[Run]:
    """Invoke `name` (LogType Tail) in the background and find the new function container started for it
    (the attacks driven this way never leave a warm environment behind to be reused)."""
    before = set(_function_containers(service))

    def timed() -> tuple[dict, object]:
        started = time.monotonic()
        response, result = call(service, name, {**(event or {}), "tag": tag}, LogType="Tail")
        response["elapsed"] = time.monotonic() - started
        return response, result

    def found() -> Run | None:
        new = {c: info for c, info in _function_containers(service).items() if c not in before}
        assert len(new) < 2, f"sandboxes started meanwhile: {list(new)}"
        for container, info in new.items():
            if info["State"]["Pid"]:
                with contextlib.suppress(FileNotFoundError):  # not started yet after all
                    sandbox = Sandbox.of(container, info)
                    if sandbox.in_its_cgroup:  # else not moved into its cgroup yet: look again
                        return Run(future, sandbox)
        return None

    with ThreadPoolExecutor(1) as executor:
        future = executor.submit(timed)
        yield wait_for(found, 30, f"the container of {name}")  # type: ignore[misc]


def assert_sandbox_gone(sandbox: Sandbox, timeout: float = 15) -> None:
    """Both containers are removed and no process of the sandbox's host uid remains."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_of(sandbox.uid)
        containers = [c for c in (sandbox.container, sandbox.holder) if _inspect(c) is not None]
        if not left and not containers:
            return
        assert time.monotonic() < deadline, f"uid {sandbox.uid} still has processes {left}, containers {containers}"
        time.sleep(0.1)


def _identity(service: ServiceProcess, tag: str = "") -> dict:
    seen = probe(service, "identity", tag=tag)
    low, high = service.uid_range
    assert low <= seen["uid"] <= high, (seen, service.uid_range)
    return seen


# -- #25: the containers themselves ------------------------------------------------------------------------------


def test_runs_as_a_host_uid_of_the_service_with_nothing_extra(service):
    """#25: the handler runs as an unprivileged host uid of the service's range (no user namespace, so not
    993), its only group its own, no capabilities, no new privileges, a seccomp filter, hostname `sandbox`."""
    seen = _identity(service)
    assert (seen["euid"], seen["gid"]) == (seen["uid"], seen["uid"])
    assert seen["groups"] in ([], [seen["uid"]]), seen
    assert seen["hostname"] == "sandbox"
    assert (seen["NoNewPrivs"], seen["Seccomp"]) == ("1", "2"), seen
    assert seen["CapEff"] == seen["CapPrm"] == "0000000000000000", seen
    assert_unharmed(service)


def test_containers_are_hardened(service):
    """#25: what the engine was asked for, both containers: read-only root, every capability dropped, no new
    privileges, our seccomp profile (never unconfined), nothing privileged, no host namespace, no device, no
    log kept, read-only binds only (never the engine's socket), memory without swap, pids and core limits."""
    tag = new_tag("harden")
    probe(service, "identity", tag=tag)
    sandbox = sandbox_of(service, sandbox_uid(tag))
    function, holder = _inspect(sandbox.container), _inspect(sandbox.holder)
    assert function is not None and holder is not None
    assert holder["HostConfig"]["NetworkMode"] == "none"
    assert holder["Config"]["User"] == function["Config"]["User"]
    assert holder["Config"]["Labels"][ROLE_LABEL] == "holder"
    for info in (function, holder):
        host = info["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], (host["CapDrop"], host["CapAdd"])
        options = host["SecurityOpt"]
        assert "no-new-privileges" in options or "no-new-privileges:true" in options, options
        profiles = [option for option in options if option.startswith("seccomp")]
        assert len(profiles) == 1 and "unconfined" not in profiles[0], profiles
        assert json.loads(profiles[0].split("=", 1)[1])["defaultAction"] == "SCMP_ACT_ALLOW"  # our deny-list
        assert host["PidMode"] in ("", "private") and host["IpcMode"] == "private", (host["PidMode"], host["IpcMode"])
        assert host["UTSMode"] in ("", "private") and host["UsernsMode"] in ("", "private")
        assert not host["Devices"] and not host["DeviceCgroupRules"] and not host["VolumesFrom"]
        assert host["LogConfig"]["Type"] == "none"
        assert host["Memory"] > 0 and host["MemorySwap"] == host["Memory"]
        assert host["PidsLimit"] and host["PidsLimit"] > 0
        assert {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}["core"] == (0, 0)
        for mount in info["Mounts"]:
            assert "docker.sock" not in mount["Source"], mount
            # The one writable bind is the FIFO the runtime's output goes to.
            assert mount["RW"] is False or Path(mount["Source"]).is_fifo(), mount
    assert function["HostConfig"]["Memory"] == 512 * MB  # the probe function's MemorySize
    assert function["HostConfig"]["PidsLimit"] == 1024
    assert function["HostConfig"]["Init"] is True
    assert_unharmed(service)


# -- filesystem: #1-#3, #20 ----------------------------------------------------------------------------------------


def _state_dir(service: ServiceProcess) -> str:
    return next(e["state_dir"] for e in service.log_events() if e.get("event") == "service.ready")


def test_host_files_are_not_there(service):
    """#1: host secrets, the service's own code, template and state, the engine's socket and data are not
    mounted; /root (a folder of the base image) and /sys (a tmpfs over Docker's sysfs) are empty."""
    absent = [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/ssl/private",
        "/etc/machine-id",
        "/root/.bashrc",
        "/root/.aws/credentials",
        "/home",
        "/sys/fs/cgroup",
        "/sys/kernel",
        str(REPO / "runtime_api" / "config.py"),
        str(TEMPLATE),
        _state_dir(service),
        "/var/cache/sandbox-runtime",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var/lib/docker",
        "/run/containerd",
        f"/proc/{service.proc.pid}/environ",
    ]
    empty = ["/root", "/sys"]
    assert Path("/etc/shadow").exists() and Path(absent[9]).exists()
    seen = probe(service, "read", paths=[*absent, *empty, "/proc/self/mountinfo"])
    assert {path: seen[path] for path in absent} == dict.fromkeys(absent, "ENOENT")
    assert {path: seen[path] for path in empty} == {path: [] for path in empty}
    mounted = [line.split()[4] for line in seen["/proc/self/mountinfo"].splitlines()]
    assert not [path for path in mounted if "docker" in path and path != "/sbin/docker-init"], mounted
    assert_unharmed(service)


def test_nothing_outside_tmp_is_writable(service):
    """#2: the root, /usr, /etc (Docker's hosts, hostname and resolv.conf included), /var/task, /var/runtime,
    /opt and /sys are read-only; Docker's /dev is a tmpfs only root may write (new names only: a failing test
    must not damage host files)."""
    read_only = ["/x", "/usr/x", "/usr/bin/x", "/etc/x", "/etc/passwd", "/etc/ssl/certs/x", "/var/x"]
    read_only += ["/var/task/x", "/var/runtime/x", "/opt/x", "/sys/x", "/root/x", "/sbin/x"]
    read_only += ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]
    seen = probe(service, "write", paths=[*read_only, "/dev/x", "/proc/sys/kernel/hostname", "/tmp/ok", "/dev/shm/ok"])
    assert {path: seen[path] for path in read_only} == dict.fromkeys(read_only, "EROFS")
    assert seen["/dev/x"] in ("EACCES", "EROFS")
    assert seen["mkdir /newdir"] == seen["symlink /newlink"] == "EROFS"
    assert seen["/proc/sys/kernel/hostname"] in ("EACCES", "EROFS")
    assert seen["/tmp/ok"] == seen["/dev/shm/ok"] == "written"
    assert_unharmed(service)


def test_setuid_binaries_gain_nothing(service):
    """#20: no new privileges and no capabilities: su, passwd, mount, chfn and newgrp fail, the uid is unchanged."""
    seen = probe(service, "setuid")
    identity = seen["identity"]
    uid = identity["uid"]
    assert (identity["euid"], identity["NoNewPrivs"]) == (uid, "1"), identity
    assert identity["CapEff"] == identity["CapPrm"] == "0000000000000000", identity
    for command in ("su", "passwd", "mount", "chfn", "newgrp"):
        assert seen[command]["rc"] not in (0, None), (command, seen[command])
        assert seen[command]["output"] != "0", (command, seen[command])
    assert seen["id -u after"] == {"rc": 0, "output": str(uid)}
    assert_unharmed(service)


# -- network: #4, #5 ---------------------------------------------------------------------------------------------


def _unreachable(address: str) -> str:
    """How a connection to `address` fails in a container: no route (IPv4), or, IPv6 being disabled in the
    namespace, no source address for it."""
    return "EADDRNOTAVAIL" if ":" in address else "ENETUNREACH"


def test_no_egress(service):
    """#4: TCP and UDP to the internet fail (IPv4: no route; IPv6: disabled in the namespace); DNS does not
    resolve."""
    seen = probe(
        service,
        "read",
        paths=["/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"],
    )
    assert set(seen.values()) == {"1\n"}, seen
    tcp = [["1.1.1.1", 80], ["1.1.1.1", 443], ["8.8.8.8", 53], ["2606:4700:4700::1111", 443]]
    udp = [["1.1.1.1", 53], ["8.8.8.8", 53], ["2606:4700:4700::1111", 53]]
    seen = probe(service, "network", tcp=tcp, udp=udp, dns=["example.com", "lambda.us-east-1.amazonaws.com"])
    assert seen.pop("interfaces") == ["lo"]
    expected = {
        f"{kind} {host} {port}": _unreachable(host)
        for kind, targets in (("tcp", tcp), ("udp", udp))
        for host, port in targets
    }
    assert {key: value for key, value in seen.items() if not key.startswith("dns")} == expected
    assert seen["dns example.com"] == seen["dns lambda.us-east-1.amazonaws.com"] == "gaierror"
    assert_unharmed(service)


def test_host_addresses_are_not_reachable(service):
    """#4: the host's own non-loopback addresses, where a host server listens, are unreachable too."""
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
    assert seen == {f"tcp {address} {port}": _unreachable(address) for address in addresses}
    assert_unharmed(service)


@pytest.fixture
def host_abstract_socket() -> Iterator[str]:
    name = f"sandbox-runtime-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind("\0" + name)
        listener.listen()
        yield name


def test_network_off_has_no_way_out(service, host_abstract_socket):
    """#4, #5 with AllowNetwork false: no proxy, no route to the internet, no name resolution; host loopback
    (the service's own port) and a host abstract socket refuse."""
    port = service.port
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # the service answers the host
    urls = ["http://1.1.1.1/", "http://example.com/", f"http://127.0.0.1:{port}/health"]
    _, result = call(
        service,
        "egress-off",
        {"urls": urls, "tunnel": ["1.1.1.1", 80], "direct": ["1.1.1.1", 80], "abstract": host_abstract_socket},
    )
    assert result["proxy"] is None
    assert {url: result[url][0] for url in urls} == dict.fromkeys(urls, "URLError"), result
    assert result["tunnel"][0] == "ConnectionRefusedError"  # no proxy listens in this sandbox
    assert result["direct"] == "Network is unreachable"
    assert result["abstract"] == "Connection refused"
    _, result = call(service, "egress-off", {"direct": ["127.0.0.1", port]})
    assert result["direct"] == "Connection refused"
    assert_unharmed(service)


def test_network_on_still_misses_host_loopback(service, host_abstract_socket):
    """#5 with AllowNetwork true: the egress proxy is there, yet the service's own port is reached neither
    directly (the sandbox's loopback is its own), nor through the proxy (NO_PROXY keeps it inside), nor by
    asking the proxy for a tunnel to it (403); a host abstract socket refuses."""
    port = service.port
    url = f"http://127.0.0.1:{port}/health"
    _, result = call(
        service,
        "egress-on",
        {"urls": [url], "tunnel": ["127.0.0.1", port], "direct": ["127.0.0.1", port], "abstract": host_abstract_socket},
    )
    assert result["proxy"] == "http://127.0.0.1:3128"
    assert result[url][0] == "URLError", result
    assert result["tunnel"] == ["OSError", "Tunnel connection failed: 403 Forbidden"], result
    assert result["direct"] == "Connection refused"
    assert result["abstract"] == "Connection refused"
    assert_unharmed(service)


needs_test_host = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 for a test host"
)
outside = test_egress.outside  # the test host (a network namespace serving HTTP), for the tests below


@needs_test_host
def test_outbound_http_and_tunnels_reach_the_outside(service, outside):
    """#4, network on: test_egress's test, through this service: the proxy reaches an outside host."""
    test_egress.test_outbound_http_and_tunnels_reach_the_outside(service, outside)


@needs_test_host
def test_the_host_itself_stays_unreachable_with_network_on(service, outside, host_abstract_socket):
    """#5, network on: test_egress's test: the host's own address and loopback, link-local, an IPv4-mapped
    host address and a host abstract socket stay unreachable."""
    test_egress.test_the_host_itself_stays_unreachable_with_network_on(service, outside, host_abstract_socket)


@needs_test_host
def test_network_off_cannot_reach_the_outside(service, outside):
    """#4, network off: test_egress's test: the outside host is reachable neither directly nor by proxy."""
    test_egress.test_network_off_has_no_way_out(service, outside)


# -- processes, identities: #6-#8, #14 ---------------------------------------------------------------------------


def test_host_processes_are_invisible(service):
    """#6: /proc and ps show the container's init (Docker's), the runtime and the probe's own ps; nothing
    else, all of them the sandbox's uid."""
    uid = _identity(service)["uid"]
    seen = probe(service, "processes")
    proc = {int(pid): cmdline for pid, cmdline in seen["proc"].items()}
    assert len(proc) == 2 and 1 in proc, proc
    runtime = max(proc)
    assert proc[1].startswith("/sbin/docker-init ") and "sandbox_bootstrap" in proc[runtime], proc
    ps_rows = seen["ps"]["output"].splitlines()[1:]
    assert len(ps_rows) == 3, ps_rows  # the init, the runtime, ps
    assert all(row.split()[1] == str(uid) for row in ps_rows), ps_rows
    commands = json.dumps(list(proc.values())) + json.dumps([row.split(None, 2)[2] for row in ps_rows])
    for host_only in ("runtime_api", "pytest", "dockerd", "containerd", str(service.port)):
        assert host_only not in commands
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) > len(proc)
    assert_unharmed(service)


def test_ptrace_and_process_vm_are_denied(service):
    """#7: PTRACE_ATTACH/SEIZE of pid 1 or of a child, PTRACE_TRACEME, process_vm_readv/writev, pidfd_getfd.

    As in bwrap sandboxes /proc/1/mem stays open to the handler (same uid, init dumpable), so Docker's init
    must hold nothing the handler lacks: the same uid, no capabilities, no new privileges, the same filter."""
    uid = _identity(service)["uid"]
    seen = probe(service, "ptrace", numbers=NUMBERS)
    denied = ["attach pid 1", "seize pid 1", "attach own child", "traceme"]
    denied += ["process_vm_readv pid 1", "process_vm_writev child", "pidfd_getfd"]
    assert {key: seen[key] for key in denied} == dict.fromkeys(denied, "EPERM")
    assert seen["pid 1 status"] == {
        "Uid": f"{uid}\t{uid}\t{uid}\t{uid}",
        "CapPrm": "0000000000000000",
        "CapEff": "0000000000000000",
        "CapBnd": "0000000000000000",
        "NoNewPrivs": "1",
        "Seccomp": "2",
    }
    assert_unharmed(service)


def _variables(environ: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in environ.split("\0") if "=" in pair)


def test_environment_holds_no_host_secret(service):
    """#8: the service runs with HOST_SECRET=hunter2; no process of the sandbox shows it, nor any host variable.
    Docker's init (pid 1) has the container's environment: the function's own variables, nothing more."""
    seen = probe(service, "environ")
    assert "HOST_SECRET" not in json.dumps(seen) and HOST_SECRET not in json.dumps(seen)
    assert "docker-init" in seen["/proc/1/cmdline"]
    init = _variables(seen["/proc/1/environ"])
    # Docker gives its init HOME and HOSTNAME (the container id); the runtime gets exactly the spec's
    # variables, as in a bwrap sandbox: neither those nor the output shell's PWD/SHLVL.
    assert init and set(init) <= set(seen["os.environ"]) | {"HOME", "HOSTNAME"}, set(init) - set(seen["os.environ"])
    assert not {"HOME", "HOSTNAME", "PWD", "OLDPWD", "SHLVL"} & set(seen["os.environ"]), seen["os.environ"]
    assert init.get("AWS_LAMBDA_FUNCTION_NAME") == "probe"
    ours = {"PATH", "LANG", "TZ"}
    host_values = {f"{key}={value}" for key, value in os.environ.items() if key not in ours}
    for where in ("/proc/self/environ", "/proc/1/environ", "/proc/1/cmdline"):
        assert not [pair for pair in host_values if pair in seen[where].replace("\0", "\n").splitlines()], where
    assert_unharmed(service)


# -- resource abuse: #9-#13 ----------------------------------------------------------------------------------------


def test_fork_bomb_is_bounded(bomb_service):
    """#9: every process forks forever. The container's pids cgroup caps the tree (forks refused), the host
    can still fork and the service still answers meanwhile, and the timeout (or an OOM) ends it all."""
    service = bomb_service
    with running(service, "fork-bomb", new_tag("fork")) as run:
        group = run.sandbox.cgroup("pids")
        pids_max = int((group / "pids.max").read_text())
        watch = PidsWatch(group)
        checks = watch.checks_of_the_host(service, run.future.done, fork_timeout=30)
        _, result = run.future.result()
        watch.stop()
    assert result["errorType"] in ("Sandbox.Timedout", "Runtime.OutOfMemory"), result
    assert pids_max == 1024
    # pids.events: forks the limit refused; at least one host check began after that and passed
    during = watch.at_the_limit(checks)
    assert watch.refused > 0 and during >= 1, (len(checks), during, watch.samples, watch.refused, watch.peak)
    assert 100 < watch.peak <= pids_max, watch.peak
    assert_sandbox_gone(run.sandbox)
    assert_unharmed(service)


@pytest.mark.parametrize("event", [{}, {"sleep": True}], ids=["busy-loop", "sleep-forever"])
def test_spin_is_killed_at_the_timeout(service, event):
    """#11: a busy loop, or a sleep forever, ends at the function's Timeout (2 s) with Sandbox.Timedout, and
    both containers are gone."""
    with running(service, "spin", new_tag("spin"), event) as run:
        response, result = run.future.result()
    rid = request_id(response)
    assert result["errorType"] == "Sandbox.Timedout"
    assert result["errorMessage"] == f"RequestId: {rid} Error: Task timed out after 2.00 seconds"
    assert response["elapsed"] >= 1.95, response["elapsed"]
    assert float(report(tail(response), rid)["Duration"].split()[0]) >= 1950
    assert_sandbox_gone(run.sandbox)
    assert_unharmed(service)


def test_cpu_quota_caps_a_busy_loop(start_service):
    """#11: with SANDBOX_CPU_QUOTA=0.25 (the container's CPU limit) a busy loop gets at most ~0.35 s of CPU
    per second of wall time."""
    capped = start_service(TEMPLATE, env={**DOCKER_ENV, "SANDBOX_CPU_QUOTA": "0.25"})
    ratio = probe(capped, "cpu_ratio", seconds=1.0)
    assert 0.05 < ratio <= 0.35, ratio
    assert_unharmed(capped)


def _memory_kb(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M)[1]) for key in ("VmRSS", "VmHWM")}  # type: ignore[index]


def test_output_flood_is_cut_at_the_log_budget(service):
    """#12: ~200 MB of output as fast as the container can write it. The invoke answers; the tail keeps the
    real last lines, then says how much went unlogged, then END and REPORT; the service log gets a bounded
    share and an `environment.output_dropped` event, and the service's memory stays flat."""
    assert_unharmed(service)  # the service's memory at rest, with a hello environment already made
    before = _memory_kb(service.proc.pid)["VmRSS"]
    log_before = service.log_path.stat().st_size
    with running(service, "flood", new_tag("flood"), {"mb": 200}) as run:
        response, result = run.future.result()
    rid = request_id(response)
    assert "FunctionError" not in response, result
    assert result["written"] >= 200 * MB
    lines = tail(response).rstrip("\n").split("\n")
    assert lines[-6:-3] == ["flood-last-0", "flood-last-1", "flood-last-2"], lines[-8:]
    note = re.fullmatch(r"sandbox-runtime: (\d+) bytes of function output were not logged .*", lines[-3])
    assert note and int(note[1]) >= result["written"] - 2 * MB, lines[-3]
    assert lines[-2] == f"END RequestId: {rid}" and lines[-1].startswith(f"REPORT RequestId: {rid}\t")
    dropped = wait_for(
        lambda: [e for e in service.log_events() if e.get("event") == "environment.output_dropped"],
        5,
        "the output_dropped event",
    )
    assert dropped[-1]["function"] == "flood" and dropped[-1]["bytes"] == int(note[1])  # type: ignore[index]
    assert service.log_path.stat().st_size - log_before < 20 * MB
    assert _memory_kb(service.proc.pid)["VmHWM"] - before < 60 * 1024, (before, _memory_kb(service.proc.pid))
    assert_unharmed(service)


def _session(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


def test_daemon_does_not_outlive_the_timeout(service):
    """#13: the handler double-forks a setsid daemon that ignores TERM, HUP and INT, then hangs. At the
    timeout the whole sandbox goes: both containers, and every process of its host uid."""
    tag = new_tag("daemon")
    with running(service, "daemon", tag) as run:
        ((daemon_uid, daemon_pid),) = wait_for(lambda: tagged(tag + "-d"), 10, "the daemon")  # type: ignore[misc]
        # The intermediate child (named `tag` too) exits at once; then only the runtime is left with it.
        wait_for(lambda: len(tagged(tag)) == 1, 10, "the intermediate child to exit")
        ((_, runtime_pid),) = tagged(tag)
        assert daemon_uid == run.sandbox.uid
        sessions = [_session(pid) for pid in (daemon_pid, runtime_pid)]
        assert sessions[0] != sessions[1], sessions  # the daemon left the runtime's session
        _, result = run.future.result()
    assert result["errorType"] == "Sandbox.Timedout"
    assert_sandbox_gone(run.sandbox)
    assert not tagged(tag + "-d")
    assert_unharmed(service)


# -- #24: leftovers ------------------------------------------------------------------------------------------------


def test_stop_leaves_no_container_or_process(start_service):
    """#24: a service with warm environments (one with a background child in a new session) and a sandbox
    killed at its timeout behind it: once it stops, none of its containers exists, no process of its uid
    range is left (stop() checks) and its state folders are gone."""
    service = start_service(TEMPLATE, env=DOCKER_ENV)
    state_dir = Path(_state_dir(service))
    call(service, "hello")  # a warm environment
    child = probe(service, "background")["child"]  # a warm environment with a child of its own
    with running(service, "spin", new_tag("spin")) as run:
        run.future.result()  # a sandbox killed at its timeout
    assert_sandbox_gone(run.sandbox)
    assert child > 0
    # The two warm environments, with their holders, and the holders started ahead for the next ones.
    functions = _function_containers(service)
    holders = len(containers_of_service(service.proc.pid)) - len(functions)
    assert len(functions) == 2 and 2 <= holders <= 4, (functions, holders)
    leftovers = lambda: [  # noqa: E731
        *Path(tempfile.gettempdir()).glob(f"sandbox-runtime-{service.proc.pid}-*"),
        *([state_dir] if state_dir.exists() else []),
    ]
    assert leftovers()

    assert service.stop() == 0  # and no process in the service's uid range outlived it
    assert containers_of_service(service.proc.pid) == []
    assert not sandbox_processes(service.uid_range)
    assert not leftovers(), leftovers()
