"""Hostile handlers for tests/security: each tries to escape its sandbox or wear down the host.

`probe` runs one named probe (PROBES below) and returns what it saw, with errors as errno names
("ENOENT") so the tests can assert the exact way an attack fails. The other handlers are the
attacks that never return (bombs, spins, floods, daemons). `tag` names the runtime process
(its comm, as `ps -o comm` shows it) so the tests can find the sandbox on the host.

Standard library only: it runs on the host's python3 inside the sandbox.
"""

import contextlib
import ctypes
import errno
import json
import mmap
import os
import pty
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
PR_SET_NAME = 15
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
TIOCSCTTY = 0x540E
MB = 1024 * 1024

held = []  # what a probe keeps alive in the warm environment (sockets, children)


def hello(event, context):
    return {"hello": (event or {}).get("ping")}


def tag(name):
    """Set this process's comm (15 bytes at most) so the host can find it with `ps -o comm`."""
    libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def error_name(exc):
    if isinstance(exc, socket.gaierror):
        return "gaierror"
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def attempt(action):
    """The action's value, or the name of the error it raised."""
    try:
        return action()
    except Exception as exc:
        return error_name(exc)


def raw_syscall(number, *args):
    ctypes.set_errno(0)
    argv = [ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_ulong(a & (2**64 - 1)) for a in args]
    ret = libc.syscall(ctypes.c_long(number), *argv)
    if ret == -1:
        return errno.errorcode[ctypes.get_errno()]
    return "ok"


def run(argv, timeout=5):
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except OSError as exc:
        return {"rc": None, "output": error_name(exc)}
    return {"rc": done.returncode, "output": (done.stdout + done.stderr).strip()}


def read_text(path, limit=1 << 20):
    with open(path, "rb") as f:
        return f.read(limit).decode(errors="replace")


def processes():
    """Every process this sandbox can see: pid -> cmdline."""
    seen = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            seen[int(name)] = attempt(lambda n=name: read_text(f"/proc/{n}/cmdline").replace("\0", " ").strip())
    return seen


def in_child(action):
    """Run `action` in a forked child (for probes that would change this process for good)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, json.dumps(attempt(action)).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with open(r, "rb") as answer:
        return json.loads(answer.read())


# -- probes: each returns JSON-able data ----------------------------------------------------------------------


def probe_identity(args):
    status = dict(line.split(":\t", 1) for line in read_text("/proc/self/status").splitlines() if ":\t" in line)
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "hostname": socket.gethostname(),
        "NoNewPrivs": status.get("NoNewPrivs", "").strip(),
        "CapEff": status.get("CapEff", "").strip(),
        "CapPrm": status.get("CapPrm", "").strip(),
        "Seccomp": status.get("Seccomp", "").strip(),
    }


def probe_read(args):
    out = {}
    for path in args["paths"]:
        out[path] = attempt(lambda p=path: os.listdir(p) if os.path.isdir(p) else read_text(p))
    return out


def probe_write(args):
    def write(path):
        with open(path, "w") as f:
            f.write("x")
        return "written"

    out = {path: attempt(lambda p=path: write(p)) for path in args["paths"]}
    out["mkdir /newdir"] = attempt(lambda: os.mkdir("/newdir"))
    out["symlink /newlink"] = attempt(lambda: os.symlink("/tmp", "/newlink"))
    return out


def probe_fill(args):
    """Fill /tmp and /dev/shm until the kernel refuses; try the root too."""

    def fill(folder, chunk):
        written, n, block = 0, 0, b"\xa5" * MB
        try:
            while True:
                with open(f"{folder}/fill-{n}", "wb") as f:
                    for _ in range(chunk // MB):
                        f.write(block)
                        f.flush()
                        written += MB
                n += 1
        except OSError as exc:
            return {"bytes": written, "error": error_name(exc)}
        finally:
            for i in range(n + 1):
                with contextlib.suppress(OSError):
                    os.unlink(f"{folder}/fill-{i}")

    return {
        "tmp": fill("/tmp", 64 * MB),
        "shm": fill("/dev/shm", MB),
        "root": fill("", MB),
    }


def probe_processes(args):
    return {"proc": processes(), "ps": run(["ps", "-eo", "pid,uid,args"])}


def probe_environ(args):
    out = {
        "os.environ": dict(os.environ),
        "/proc/self/environ": attempt(lambda: read_text("/proc/self/environ")),
        "/proc/1/environ": attempt(lambda: read_text("/proc/1/environ")),
        "/proc/1/cmdline": attempt(lambda: read_text("/proc/1/cmdline")),
    }
    for pid in processes():
        for part in ("environ", "cmdline"):
            out[f"/proc/{pid}/{part}"] = attempt(lambda p=pid, q=part: read_text(f"/proc/{p}/{q}"))
    return out


def probe_ptrace(args):
    nr = args["numbers"]
    child = subprocess.Popen(["sleep", "30"])
    try:
        iov = ctypes.create_string_buffer(16)
        return {
            "attach pid 1": raw_syscall(nr["ptrace"], 16, 1, 0, 0),  # PTRACE_ATTACH
            "seize pid 1": raw_syscall(nr["ptrace"], 0x4206, 1, 0, 0),  # PTRACE_SEIZE
            "attach own child": raw_syscall(nr["ptrace"], 16, child.pid, 0, 0),
            "traceme": in_child(lambda: raw_syscall(nr["ptrace"], 0, 0, 0, 0)),
            "process_vm_readv pid 1": raw_syscall(nr["process_vm_readv"], 1, ctypes.addressof(iov), 1, 0, 0, 0),
            "process_vm_writev child": raw_syscall(
                nr["process_vm_writev"], child.pid, ctypes.addressof(iov), 1, 0, 0, 0
            ),
            "pidfd_getfd": raw_syscall(nr["pidfd_getfd"], 0, 0, 0),
            "/proc/1/mem": attempt(read_pid1_memory),
            "pid 1 status": {
                key: value.strip()
                for key, value in (line.split(":", 1) for line in read_text("/proc/1/status").splitlines())
                if key in ("Uid", "CapPrm", "CapEff", "CapBnd", "NoNewPrivs", "Seccomp")
            },
        }
    finally:
        child.kill()
        child.wait()


def read_pid1_memory():
    """Read the first bytes of pid 1's executable mapping through /proc/1/mem (no ptrace call)."""
    start = int(read_text("/proc/1/maps").split("-", 1)[0], 16)
    with open("/proc/1/mem", "rb") as f:
        f.seek(start)
        return f.read(4).hex()


def probe_kill(args):
    """kill(-1, SIGKILL) and kills of host pids. A child of ours shows what -1 does reach."""
    child = subprocess.Popen(["sleep", "30"])
    out = {"kill -1": attempt(lambda: os.kill(-1, signal.SIGKILL) or "ok")}
    child.wait(5)
    out["own child"] = child.returncode
    out["kill pid 1"] = attempt(lambda: os.kill(1, signal.SIGKILL) or "ok")
    for pid in args["host_pids"]:
        out[str(pid)] = attempt(lambda p=pid: os.kill(p, signal.SIGKILL) or "ok")
    out["pids after"] = sorted(processes())
    return out


def probe_tty(args):
    def tiocsti_on_own_terminal():
        # A new session whose controlling terminal is a fresh pty: without the filter, TIOCSTI works here.
        _, slave = pty.openpty()
        os.setsid()
        fcntl_ioctl(slave, TIOCSCTTY, 0)
        return ioctl_errno(slave, TIOCSTI, b"x")

    return {
        "open /dev/tty": attempt(lambda: open("/dev/tty", "rb") and "opened"),
        "TIOCSTI stdin": ioctl_errno(0, TIOCSTI, b"x"),
        "TIOCSTI stdout": ioctl_errno(1, TIOCSTI, b"x"),
        "TIOCLINUX stdout": ioctl_errno(1, TIOCLINUX, b"\x06"),
        "TIOCSTI high bits": ioctl_errno(1, (1 << 32) | TIOCSTI, b"x"),
        "TIOCSTI own pty": in_child(tiocsti_on_own_terminal),
    }


def fcntl_ioctl(fd, request, arg):
    return libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.c_ulong(arg))


def ioctl_errno(fd, request, arg):
    ctypes.set_errno(0)
    ret = libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.c_char_p(arg))
    return "ok" if ret == 0 else errno.errorcode[ctypes.get_errno()]


def probe_namespaces(args):
    nr = args["numbers"]
    os.makedirs("/tmp/mnt", exist_ok=True)
    return {
        "unshare -U": run(["unshare", "-U", "true"]),
        "unshare -m": run(["unshare", "-m", "true"]),
        "unshare -n": run(["unshare", "-rn", "true"]),
        "os.unshare": in_child(lambda: os.unshare(CLONE_NEWUSER) or "ok") if hasattr(os, "unshare") else "unavailable",
        "unshare(CLONE_NEWUSER)": in_child(lambda: raw_syscall(nr["unshare"], CLONE_NEWUSER)),
        "unshare(CLONE_NEWNS)": in_child(lambda: raw_syscall(nr["unshare"], CLONE_NEWNS)),
        "mount tmpfs": raw_syscall(nr["mount"], b"none", b"/tmp/mnt", b"tmpfs", 0, 0),
        "mount command": run(["mount", "-t", "tmpfs", "none", "/tmp/mnt"]),
    }


def probe_kernel(args):
    nr = args["numbers"]
    out = {
        "bpf": raw_syscall(nr["bpf"], 5, 0, 0),  # BPF_PROG_LOAD
        "perf_event_open": raw_syscall(nr["perf_event_open"], 0, 0, -1, -1, 0),
        "userfaultfd": raw_syscall(nr["userfaultfd"], 1),
        "io_uring_setup": raw_syscall(nr["io_uring_setup"], 1, 0),
        "keyctl": raw_syscall(nr["keyctl"], 0, -3, 0),  # KEYCTL_GET_KEYRING_ID, session keyring
        "add_key": raw_syscall(nr["add_key"], b"user", b"probe", b"x", 1, -2),
        "request_key": raw_syscall(nr["request_key"], b"user", b"probe", 0, -2),
        "syslog": raw_syscall(nr["syslog"], 3, 0, 0),  # SYSLOG_ACTION_READ_ALL
        "init_module": raw_syscall(nr["init_module"], 0, 0, b""),
    }
    for name, family, kind in (
        ("AF_PACKET", 17, socket.SOCK_RAW),
        ("AF_ALG", 38, socket.SOCK_SEQPACKET),
        ("AF_VSOCK", 40, socket.SOCK_STREAM),
        ("AF_NETLINK", 16, socket.SOCK_RAW),
    ):
        out[name] = attempt(lambda f=family, k=kind: socket.socket(f, k).close() or "ok")
    return out


def probe_kernel_log(args):
    nr = args["numbers"]
    return {
        "dmesg": run(["dmesg"]),
        "/proc/kmsg": attempt(lambda: open("/proc/kmsg", "rb") and "opened"),
        "/dev/kmsg": attempt(lambda: open("/dev/kmsg", "rb") and "opened"),
        "syslog": raw_syscall(nr["syslog"], 10, 0, 0),  # SYSLOG_ACTION_SIZE_BUFFER
        "keyctl show": raw_syscall(nr["keyctl"], 0, -3, 0),
        "/proc/keys": attempt(lambda: read_text("/proc/keys")),
    }


def probe_setuid(args):
    mounts = {}
    for line in read_text("/proc/self/mountinfo").splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[5]
    commands = {
        "su": ["su", "root", "-c", "id -u"],
        "passwd": ["passwd", "-d", "root"],
        "mount": ["mount", "--bind", "/tmp", "/tmp"],
        "chfn": ["chfn", "-f", "x", "root"],
        "newgrp": ["newgrp", "root"],
    }
    with ThreadPoolExecutor(len(commands)) as pool:  # su sleeps its PAM fail delay: run them side by side
        out = dict(zip(commands, pool.map(run, commands.values())))
    out["identity"] = probe_identity(args)
    out["/usr options"] = mounts.get("/usr")
    out["id -u after"] = run(["id", "-u"])
    return out


def probe_core(args):
    before = set(os.listdir("/tmp"))

    def crash():
        os.chdir("/tmp")
        os.kill(os.getpid(), signal.SIGSEGV)

    pid = os.fork()
    if pid == 0:
        try:
            crash()
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    return {
        "RLIMIT_CORE": list(resource.getrlimit(resource.RLIMIT_CORE)),
        "raise RLIMIT_CORE": attempt(lambda: resource.setrlimit(resource.RLIMIT_CORE, (1 << 30, 1 << 30)) or "ok"),
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "core dumped": os.WCOREDUMP(status),
        "new files in /tmp": sorted(set(os.listdir("/tmp")) - before),
    }


def probe_open_files(args):
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = []
    error = None
    try:
        for _ in range(args.get("count", 2000)):
            files.append(open("/dev/null", "rb"))
    except OSError as exc:
        error = error_name(exc)
    finally:
        for f in files:
            f.close()
    return {"RLIMIT_NOFILE": list(limit), "opened": len(files), "error": error}


def probe_threads(args):
    stop = threading.Event()
    threads = []
    error = None
    threading.stack_size(256 * 1024)
    try:
        for _ in range(args.get("count", 2000)):
            thread = threading.Thread(target=stop.wait)
            thread.start()
            threads.append(thread)
    except RuntimeError as exc:
        error = str(exc)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        threading.stack_size(0)
    return {"started": len(threads), "error": error}


def probe_cpu_ratio(args):
    """CPU time over wall time of a busy loop: the CFS quota shows as a ratio below 1."""
    start_wall, start_cpu = time.monotonic(), time.process_time()
    while time.monotonic() - start_wall < args.get("seconds", 1.0):
        pass
    return (time.process_time() - start_cpu) / (time.monotonic() - start_wall)


def probe_network(args):
    out = {"interfaces": [name for _, name in socket.if_nameindex()]}
    for target in args.get("tcp", []):
        host, port = target

        def connect(h=host, p=port):
            family = socket.AF_INET6 if ":" in h else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(3)
                s.connect((h, p))
            return "connected"

        out[f"tcp {host} {port}"] = attempt(connect)
    for target in args.get("udp", []):
        host, port = target

        def send(h=host, p=port):
            family = socket.AF_INET6 if ":" in h else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.sendto(
                    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01", (h, p)
                )
            return "sent"

        out[f"udp {host} {port}"] = attempt(send)
    for name in args.get("dns", []):
        out[f"dns {name}"] = attempt(lambda n=name: socket.getaddrinfo(n, 443))
    for name in args.get("abstract", []):

        def connect_abstract(n=name):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(3)
                s.connect("\0" + n)
            return "connected"

        out[f"abstract {name}"] = attempt(connect_abstract)
    return out


def probe_cross(args):
    """One of two concurrent sandboxes: leave a secret and a listener; look for the other's."""
    with open("/tmp/cross-secret", "w") as f:
        f.write(args["secret"])
    if not held:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("\0cross-" + args["secret"])
        listener.listen()
        held.append(listener)
    time.sleep(args.get("hold", 0))
    out = {"own secret": read_text("/tmp/cross-secret")}
    peer = args.get("peer")
    if peer:
        visible = processes()
        comms = [attempt(lambda p=pid: read_text(f"/proc/{p}/comm").strip()) for pid in visible]
        out["peer tag visible"] = peer["tag"] in comms
        out["peer pid in /proc"] = os.path.exists(f"/proc/{peer['pid']}")
        out["signal peer"] = attempt(lambda: os.kill(peer["pid"], signal.SIGKILL) or "ok")
        out["ptrace peer"] = raw_syscall(args["numbers"]["ptrace"], 16, peer["pid"], 0, 0)

        def connect_peer():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect("\0cross-" + peer["secret"])
            return "connected"

        out["connect peer listener"] = attempt(connect_peer)
        out["peer secret seen"] = any(
            peer["secret"] in attempt(lambda p=path: read_text(p))
            for path in [os.path.join("/tmp", n) for n in os.listdir("/tmp")]
            if os.path.isfile(path)
        )
    return out


def probe_code(args):
    """What /var/task shows of a CodeUri holding links to host files, FIFOs and devices."""
    out = {"listing": sorted(os.listdir("/var/task"))}
    for module in args["modules"]:
        out[f"import {module}"] = attempt(lambda m=module: repr(vars(__import__(m)).get("SECRET")))
    for name in args["files"]:
        out[name] = attempt(lambda n=name: read_text(f"/var/task/{n}", 4096))
    cache = "/var/task/__pycache__"
    out["pycache"] = (
        {n: read_text(os.path.join(cache, n)) for n in sorted(os.listdir(cache))} if os.path.isdir(cache) else {}
    )
    return out


def probe_background(args):
    """Leave a child running after the invocation ends (legitimate on Lambda, frozen in between)."""
    held.append(subprocess.Popen(["sleep", "300"], start_new_session=True))
    return {"child": held[-1].pid}


PROBES = {name.removeprefix("probe_"): value for name, value in globals().items() if name.startswith("probe_")}


def probe(event, context):
    if event.get("tag"):
        tag(event["tag"])
    return PROBES[event["probe"]](event.get("args", {}))


# -- attacks that do not return ---------------------------------------------------------------------------------


def memory_bomb(event, context):
    tag(event.get("tag", "memory-bomb"))
    hoard = []
    while True:
        shared = event.get("kind") == "mmap"  # anonymous MAP_SHARED memory is shmem, not the heap
        block = mmap.mmap(-1, 16 * MB, flags=mmap.MAP_SHARED) if shared else bytearray(16 * MB)
        for offset in range(0, 16 * MB, 4096):
            block[offset] = 1  # touch every page
        hoard.append(block)


def tmp_bomb(event, context):
    """Write into /tmp (a tmpfs charged to the sandbox's memory) far past the memory limit."""
    tag(event.get("tag", "tmp-bomb"))
    block = b"\x5a" * MB
    n = 0
    while True:
        with open(f"/tmp/bomb-{n}", "wb") as f:
            for _ in range(16):
                f.write(block)
        n += 1


def fork_bomb(event, context):
    """Every process forks forever, whatever the kernel answers."""
    tag(event.get("tag", "fork-bomb"))
    while True:
        with contextlib.suppress(OSError):
            os.fork()


def spin(event, context):
    tag(event.get("tag", "spin"))
    if event.get("sleep"):
        time.sleep(1e9)
    while True:
        pass


def daemon(event, context):
    """Double fork and setsid; the daemon ignores TERM/HUP/INT and outlives the handler's timeout."""
    tag(event.get("tag", "daemon"))
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
            tag(event.get("tag", "daemon") + "-d")
            time.sleep(1e9)
        os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(1e9)


def flood(event, context):
    """Write `mb` megabytes of short lines to stdout as fast as possible, then the last lines."""
    tag(event.get("tag", "flood"))
    line = b"flood " + b"x" * 93 + b"\n"
    chunk = line * (MB // len(line))
    written = 0
    while written < event.get("mb", 200) * MB:
        written += os.write(1, chunk)
    os.write(1, b"".join(f"flood-last-{i}\n".encode() for i in range(3)))
    sys.stdout.flush()
    return {"written": written}
