"""Mount points whose content arrives after their sandbox has started (pre-started sandboxes).

bwrap fixes a sandbox's mounts when it starts, but not what happens to them later on the host: bwrap
turns every mount of its namespace into a *slave* of the host's, so a mount the host makes later under
a *shared* mount propagates into the sandbox. `Slots` is one small tmpfs of empty folders, made
shared; a pre-started sandbox binds its own slot's `task` and `opt` folders at /var/task and /opt, and
when a function is assigned the service mounts the function's staged code and layers onto them. Only
the assigned sandbox sees them: a propagated mount only reaches mounts whose root contains its mount
point, and each sandbox's bind is rooted at its own slot.

The code arrives already read-only, nosuid and nodev: the mount is made detached (`open_tree`), given
its flags (`mount_setattr`) and only then attached (`move_mount`). A `mount --bind` followed by a
read-only remount would propagate the read-write bind, and the remount would not follow it. Those
calls are Linux 5.12+; where they, or mounting at all, are refused, `Slots.open` says why and the
service starts every sandbox from nothing instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import threading
from pathlib import Path

from . import volumes

# The mount API's system calls have one number on every architecture (the unified table from 424 on).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_NOSUID = 0x2
_MOUNT_ATTR_NODEV = 0x4
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_SHARED = 1 << 20
_MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class SlotError(OSError):
    pass


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise SlotError(err, f"{what}: {os.strerror(err)}")
    return result


def _mount_read_only(source: Path, target: Path) -> None:
    """Mount `source` on `target`, read-only, nosuid and nodev from the moment it is visible."""
    fd = _check(
        _libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(source), _OPEN_TREE_CLONE | os.O_CLOEXEC),
        f"open_tree {source}",
    )
    try:
        attr = _MountAttr(_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV, 0, 0, 0)
        _check(
            _libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)),
            f"mount_setattr {source}",
        )
        _check(
            _libc.syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH),
            f"move_mount {source} to {target}",
        )
    finally:
        os.close(fd)


class Slot:
    """One pre-started sandbox's /var/task and /opt, empty until `fill`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.task = folder / "task"
        self.opt = folder / "opt"
        self._mounted: list[Path] = []
        self._lock = threading.Lock()

    def fill(self, code_dir: Path, opt_dir: Path | None) -> None:
        with self._lock:
            if self._mounted:
                raise SlotError(0, f"slot {self.folder.name} is already filled")
            for source, target in ((code_dir, self.task), (opt_dir, self.opt)):
                if source is not None:
                    _mount_read_only(source, target)
                    self._mounted.append(target)

    def release(self) -> None:
        """Unmount what `fill` mounted (lazily: the sandbox may still be dying) and remove the folder."""
        with self._lock:
            for target in reversed(self._mounted):
                _libc.umount2(os.fsencode(target), _MNT_DETACH)
            self._mounted.clear()
            shutil.rmtree(self.folder, ignore_errors=True)


class Slots:
    """A shared tmpfs of slots under `root`. `open` it once per service; `close` after its sandboxes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._serial = itertools.count(1)

    @classmethod
    def open(cls, root: Path) -> tuple[Slots | None, str | None]:
        """The slots, or None and why this host cannot have them."""
        try:
            if os.path.lexists(root):  # left by a service that died without cleaning up
                cls._remove(root)
            os.mkdir(root, 0o711)
            flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
            options = b"size=1m,nr_inodes=65536,mode=0711"
            mounted = _libc.mount(b"sandbox-slots", os.fsencode(root), b"tmpfs", flags, options)
            _check(mounted, f"mount a tmpfs on {root}")
            try:
                _check(_libc.mount(None, os.fsencode(root), None, _MS_SHARED, None), f"make {root} shared")
                cls._probe(root)
            except OSError:
                _libc.umount2(os.fsencode(root), _MNT_DETACH)
                raise
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.rmdir(root)
            return None, str(exc)
        return cls(root), None

    @staticmethod
    def _probe(root: Path) -> None:
        """One read-only mount and unmount: the kernel has the mount API and lets us use it."""
        source, target = root / "probe", root / "probe-target"
        os.mkdir(source, 0o700)
        os.mkdir(target, 0o700)
        try:
            _mount_read_only(source, target)
            _libc.umount2(os.fsencode(target), _MNT_DETACH)
        finally:
            os.rmdir(target)
            os.rmdir(source)

    def new(self) -> Slot:
        folder = self.root / str(next(self._serial))
        os.mkdir(folder, 0o711)  # sandbox uids traverse it to their binds, never list it
        for name in ("task", "opt"):
            os.mkdir(folder / name, 0o755)
        return Slot(folder)

    def close(self) -> None:
        self._remove(self.root)

    @staticmethod
    def _remove(root: Path) -> None:
        volumes.unmount_under(root)  # the functions' code first: never remove anything through a mount
        _libc.umount2(os.fsencode(root), _MNT_DETACH)
        shutil.rmtree(root, ignore_errors=True)
