"""The seccomp deny-list loaded into every sandbox (bwrap `--seccomp FD`), built with libseccomp (pyseccomp).

Default action ALLOW: this is a deny-list that removes kernel attack surface and host-global operations
the sandbox has no use for (reference/sandbox.md §2.7, §7). Most of these calls already fail inside an
unprivileged bwrap sandbox for lack of capabilities; the filter makes them fail before the kernel code
that parses their arguments is reached, and closes the ones that need no capability at all.

Rule groups, and what each closes:
- debugging and cross-process access (`ptrace`, `process_vm_readv/writev`, `pidfd_getfd`,
  `process_madvise`, `kcmp`): same-uid processes can otherwise attach to, read or take files from
  each other, including bwrap's pid 1 with its argv and environment (§2.5, §7 #7).
- namespaces and mounts (`unshare`, `setns`, `mount`, `umount2`, `pivot_root`, `chroot`, the new mount
  API): nested user namespaces are the main path to privileged kernel code (§2.3, §7 #16).
  `clone` is denied whenever one CLONE_NEW* bit is set (one masked rule per flag, so any combination
  matches). `clone3` passes its flags in a struct that BPF cannot read, so it gets ENOSYS and glibc
  falls back to `clone`, which the rules can inspect.
- kernel-level (`kexec_*`, modules, `bpf`, `perf_event_open`, `userfaultfd`, keyrings, `acct`, swap,
  `reboot`, `syslog`, `quotactl`, file handles, `fanotify_init`, `io_uring_*`, clock setting,
  `lookup_dcookie`): large or exploit-friendly attack surface (userfaultfd and io_uring feature in
  many kernel exploits), host-global state (keyrings are not namespaced, clocks, the kernel log), or
  handle-based opens that sidestep path checks.
- `personality`: only PER_LINUX (0) and the query 0xffffffff are allowed. Everything else, notably
  ADDR_NO_RANDOMIZE (no ASLR for what the sandbox execs next) and READ_IMPLIES_EXEC, gets EPERM. Normal
  programs (python, glibc, fork/exec, multiprocessing) never call it; `setarch`/`linux32` fail and gdb
  warns that it cannot disable ASLR. The kernel reads the argument as 32 bits, so values with high bits
  set are denied too. libseccomp allows one comparison per argument per rule, so "not 0 and not
  0xffffffff" is written as: some bit i is 1 while bit i+1 (mod 32) is 0 (32 masked rules), which holds
  for every 32-bit value except those two.
- `ioctl` TIOCSTI / TIOCLINUX: injecting input into a terminal outside the sandbox (CVE-2017-5226).
  The command is compared under a 32-bit mask: the kernel ignores the high bits, a plain EQ would not.
- `socket`: families other than AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK get EAFNOSUPPORT (AF_PACKET,
  AF_ALG, AF_VSOCK, bluetooth, ... are rarely needed and often buggy). Netlink stays for
  `getifaddrs`-style code; it only sees the sandbox's own network namespace. The GE rule also catches
  any value with high bits set.
- foreign architectures: the filter covers the native ABI only and libseccomp's bad-arch action (kill)
  stays, so the i386 (`int 0x80`) and x32 syscall tables cannot be used to go around the list.

Names this libseccomp does not know, or that do not exist on this architecture, are skipped.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import platform

import pyseccomp as sc

__all__ = [
    "DENIED_SYSCALLS",
    "SETUP_SYSCALLS",
    "build_filter",
    "docker_profile",
    "filter_bytes",
    "filter_fd",
    "service_container_profile",
]

DENIED_SYSCALLS: tuple[str, ...] = (
    # debugging
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "process_madvise", "kcmp",
    # namespaces and mounts
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr", "open_tree_attr",
    # kernel-level
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "acct", "swapon", "swapoff", "reboot", "syslog", "quotactl", "quotactl_fd",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init", "lookup_dcookie",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "clock_settime", "clock_adjtime", "settimeofday", "adjtimex",
)  # fmt: skip

CLONE_NAMESPACE_FLAGS: dict[str, int] = {
    # clone3/unshare only: in clone() the low byte is the exit signal, where 0x80 is no real signal (<= 64),
    # so this rule costs nothing and stays in case a kernel ever reads it as CLONE_NEWTIME there.
    "CLONE_NEWTIME": 0x00000080,
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
DENIED_IOCTLS: dict[str, int] = {"TIOCSTI": 0x5412, "TIOCLINUX": 0x541C}
ALLOWED_SOCKET_FAMILIES: frozenset[int] = frozenset({1, 2, 10, 16})  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK

_U32 = 0xFFFFFFFF
_EPERM = sc.ERRNO(errno.EPERM)


def _nr(name: str) -> int | None:
    """The native syscall number, or None if libseccomp does not know the name here (or it is a pseudo-call)."""
    nr: int = sc.resolve_syscall(sc.Arch.NATIVE, name)
    return nr if nr >= 0 else None


def build_filter() -> sc.SyscallFilter:
    """A fresh filter with every rule (uncached; `build_filter().export_pfc(sys.stdout)` shows it)."""
    f = sc.SyscallFilter(defaction=sc.ALLOW)  # ACT_BADARCH stays libseccomp's default: kill
    for name in DENIED_SYSCALLS:
        if (nr := _nr(name)) is not None:
            f.add_rule(_EPERM, nr)
    for flag in CLONE_NAMESPACE_FLAGS.values():
        f.add_rule(_EPERM, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for request in DENIED_IOCTLS.values():
        f.add_rule(_EPERM, "ioctl", sc.Arg(1, sc.MASKED_EQ, _U32, request))
    # Every 32-bit value other than 0 and 0xffffffff has a bit i set with bit i+1 (mod 32) clear.
    f.add_rule(_EPERM, "personality", sc.Arg(0, sc.GT, _U32))
    for i in range(32):
        one, zero = 1 << i, 1 << ((i + 1) % 32)
        f.add_rule(_EPERM, "personality", sc.Arg(0, sc.MASKED_EQ, one | zero, one))
    last_allowed = max(ALLOWED_SOCKET_FAMILIES)
    for family in range(last_allowed):
        if family not in ALLOWED_SOCKET_FAMILIES:
            f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, family))
    f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.GT, last_allowed))
    return f


@functools.cache
def filter_bytes() -> bytes:
    """The compiled BPF program (struct sock_filter[]), built once per process."""
    fd = os.memfd_create("seccomp-export", os.MFD_CLOEXEC)
    with open(fd, "w+b") as file:
        build_filter().export_bpf(file)
        file.seek(0)
        return file.read()


def filter_fd() -> int:
    """A new fd (close-on-exec, offset 0) holding `filter_bytes()`, for one `bwrap --seccomp FD`.

    bwrap reads it to EOF, so every sandbox start needs its own; pass it with `pass_fds` (which clears
    close-on-exec in the child only) and close it in the parent after the Popen.
    """
    program = filter_bytes()
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        os.write(fd, program)  # a memfd write is never short
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


# Docker names the native ABI by these; anything else falls to the bad-arch action, as in `build_filter`.
_DOCKER_ARCHES = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}

# What the service, and bwrap while it builds a sandbox, call to make sandboxes: namespaces (`clone` with
# CLONE_NEW* flags too), mounts (the slots' detached mounts use the new mount API), `pivot_root` and
# `chroot` into the new root. The container the service runs in allows these and nothing else of
# DENIED_SYSCALLS (`service_container_profile`); the sandboxes themselves are denied all of them.
SETUP_SYSCALLS: frozenset[str] = frozenset(
    {"unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "mount_setattr", "move_mount"}
)


def _docker_rule(names: list[str], err: int = errno.EPERM, *args: dict[str, object]) -> dict[str, object]:
    entry: dict[str, object] = {"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": err}
    if args:
        entry["args"] = list(args)
    return entry


def _docker_arg(index: int, op: str, value: int, value_two: int = 0) -> dict[str, object]:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


def _docker_rules(denied: list[str], *, clone_namespaces: bool) -> list[dict[str, object]]:
    """`build_filter`'s rules in Docker's profile format, denying `denied` by name, and `clone` with a
    CLONE_NEW* flag if `clone_namespaces`. Rules for one name are ORed; the arguments inside one rule are
    ANDed (runc's semantics). For SCMP_CMP_MASKED_EQ, `value` is the mask and `valueTwo` the expected result."""
    rule, arg = _docker_rule, _docker_arg
    rules = [rule(denied)]
    if clone_namespaces:
        rules += [
            rule(["clone"], errno.EPERM, arg(0, "SCMP_CMP_MASKED_EQ", f, f)) for f in CLONE_NAMESPACE_FLAGS.values()
        ]
    rules.append(rule(["clone3"], errno.ENOSYS))
    rules += [rule(["ioctl"], errno.EPERM, arg(1, "SCMP_CMP_MASKED_EQ", _U32, r)) for r in DENIED_IOCTLS.values()]
    rules.append(rule(["personality"], errno.EPERM, arg(0, "SCMP_CMP_GT", _U32)))
    for i in range(32):
        one, zero = 1 << i, 1 << ((i + 1) % 32)
        rules.append(rule(["personality"], errno.EPERM, arg(0, "SCMP_CMP_MASKED_EQ", one | zero, one)))
    last_allowed = max(ALLOWED_SOCKET_FAMILIES)
    rules += [
        rule(["socket"], errno.EAFNOSUPPORT, arg(0, "SCMP_CMP_EQ", family))
        for family in range(last_allowed)
        if family not in ALLOWED_SOCKET_FAMILIES
    ]
    rules.append(rule(["socket"], errno.EAFNOSUPPORT, arg(0, "SCMP_CMP_GT", last_allowed)))
    return rules


@functools.cache
def docker_profile() -> str:
    """The same rules as `build_filter`, as a Docker seccomp profile (JSON for `--security-opt seccomp=`).

    Docker's own default profile is an allow-list written for containers in general; this one is the
    deny-list every bwrap sandbox gets, so both backends refuse exactly the same calls, with the same
    errno.
    """
    rules = _docker_rules([name for name in DENIED_SYSCALLS if _nr(name) is not None], clone_namespaces=True)
    arch = _DOCKER_ARCHES.get(platform.machine())
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [arch] if arch else [], "syscalls": rules}
    return json.dumps(profile, separators=(",", ":"))


def service_container_profile() -> dict[str, object]:
    """The Docker seccomp profile of the container the service itself runs in (`docker-seccomp.json`).

    Docker's default profile cannot be used there: it denies `pivot_root` even to a container given
    CAP_SYS_ADMIN, and bwrap needs it. This profile is the sandboxes' deny-list minus
    SETUP_SYSCALLS, so the service's container keeps the sandboxes' other refusals (ptrace,
    bpf, io_uring, userfaultfd, keyrings, modules, foreign architectures, ...), which the service never
    needs. It names every call, known to this machine's libseccomp or not (runc skips names it does not
    know), and both architectures (Docker keeps the native one's entry), so the same file serves every host.
    """
    denied = [name for name in DENIED_SYSCALLS if name not in SETUP_SYSCALLS]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [{"architecture": arch, "subArchitectures": []} for arch in _DOCKER_ARCHES.values()],
        "syscalls": _docker_rules(denied, clone_namespaces=False),
    }
