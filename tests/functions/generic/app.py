"""What a runtime can observe about how it was started: a pre-started generic sandbox must be
indistinguishable from a sandbox started for the function (tests/test_generic_sandboxes.py)."""

import locale
import os
import resource
import socket
import sys
import time

# Differ by design between any two environments, generic or not.
_PER_ENVIRONMENT = {"AWS_LAMBDA_LOG_STREAM_NAME", "_X_AMZN_TRACE_ID"}


def _mount_options(point):
    options = None  # the last mount on `point` is the one seen there
    with open("/proc/self/mountinfo") as info:
        for line in info:
            fields = line.split()
            if fields[4] == point:
                options = sorted(fields[5].split(","))
    return options


def _writable(folder):
    try:
        with open(os.path.join(folder, "written"), "w"):
            return True
    except OSError as exc:
        return type(exc).__name__


def _listening(port):
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def fingerprint(event, context):
    tree = {top: sorted(os.listdir(top)) for top in ("/var/task", "/opt")}
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {
        "environ": {k: v for k, v in os.environ.items() if k not in _PER_ENVIRONMENT},
        "cwd": os.getcwd(),
        "argv": sys.argv,
        "path": sys.path,
        "flags": list(sys.flags),
        "warnoptions": sys.warnoptions,
        "modules": sorted(name for name in sys.modules if name != "sandbox_bootstrap.preload"),
        "tree": tree,
        "ids": [os.getuid(), os.getgid(), os.getgroups()],
        "hostname": socket.gethostname(),
        "tz": [time.tzname, time.timezone],
        "encodings": [locale.getpreferredencoding(False), sys.getfilesystemencoding()],
        "rlimits": [
            resource.getrlimit(r) for r in (resource.RLIMIT_NOFILE, resource.RLIMIT_FSIZE, resource.RLIMIT_CORE)
        ],
        "capabilities": [status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")],
        "no_new_privs": status["NoNewPrivs"].strip(),
        "seccomp": status["Seccomp"].strip(),
        # /opt without layers is an empty read-only folder either way, though not always a mount point.
        "mounts": {point: _mount_options(point) for point in ("/var/task", "/tmp")},
        "writable": {folder: _writable(folder) for folder in ("/var/task", "/opt", "/tmp")},
        "tmp_bytes": os.statvfs("/tmp").f_blocks * os.statvfs("/tmp").f_frsize,
        "proxy_listening": _listening(3128),
        "memory_limit_in_mb": context.memory_limit_in_mb,
    }


def allocate(event, context):
    block = bytearray(event["mb"] * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return {"allocated_mb": event["mb"]}
