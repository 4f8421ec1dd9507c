"""Size-capped host folders that a sandbox may write (an agent session's workspace).

A sandbox's writable folder must never be able to fill the host's disk, so each one is a tmpfs the
service mounts on an empty folder of its own: `size` caps its bytes and `nr_inodes` its files, and
`nosuid,nodev` make what is written there inert on the host. The folder is then bound read-write
into the sandbox (`SandboxSpec.workspace_dir`). Pages are memory: those the sandbox writes are
charged to the sandbox's memory cgroup (like its /tmp), those the service writes (uploads) to the
service's.

Mounting needs CAP_SYS_ADMIN (the service runs as root). Where it is refused, `make` leaves a plain
folder and says so: the caller decides whether that is acceptable.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
from pathlib import Path

_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MNT_DETACH = 0x2
_libc = ctypes.CDLL(None, use_errno=True)


class VolumeError(OSError):
    pass


def make(path: Path, size_bytes: int, *, inodes: int | None = None) -> bool:
    """Create `path` (an empty folder, 0700 root) with a tmpfs of `size_bytes` on it. True when the
    tmpfs is mounted, False when mounting was refused (EPERM) and `path` is a plain folder."""
    os.mkdir(path, 0o700)
    inodes = inodes or max(1024, size_bytes // 4096)
    options = f"size={size_bytes},nr_inodes={inodes},mode=0700"
    if _libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", _MS_NOSUID | _MS_NODEV, options.encode()) == 0:
        return True
    err = ctypes.get_errno()
    if err == 1:  # EPERM: no CAP_SYS_ADMIN here
        return False
    os.rmdir(path)
    raise VolumeError(err, f"cannot mount a tmpfs on {path}: {os.strerror(err)}")


def remove(path: Path) -> None:
    """Unmount `path` (lazily, should a dying sandbox still hold it) and remove it with its content."""
    if _is_mount_point(path) and _libc.umount2(os.fsencode(path), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise VolumeError(err, f"cannot unmount {path}: {os.strerror(err)}")
    # rmtree works on descriptors and never follows the links the sandbox may have left there.
    shutil.rmtree(path, ignore_errors=True)


def unmount_under(folder: Path) -> int:
    """Lazily unmount every mount below `folder` (those of a service that died without cleaning up);
    how many. The folders themselves are left for the caller to remove."""
    prefix = os.fsencode(os.path.realpath(folder)) + b"/"
    mounts = [point for point in _mount_points() if point.startswith(prefix)]
    for point in sorted(mounts, key=len, reverse=True):  # the deepest first
        with contextlib.suppress(OSError):
            _libc.umount2(point, _MNT_DETACH)
    return len(mounts)


def _is_mount_point(path: Path) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:
        return False


def _mount_points() -> list[bytes]:
    """Mount points of this mount namespace, from /proc/self/mountinfo (octal escapes decoded)."""
    points = []
    try:
        with open("/proc/self/mountinfo", "rb") as info:
            for line in info:
                fields = line.split(b" ")
                if len(fields) > 4:
                    points.append(_unescape(fields[4]))
    except OSError:
        pass
    return points


def _unescape(field: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)
