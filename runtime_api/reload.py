"""Hot reload: a change under a template function's code folder (or its layers, or a new build of it)
is served from the next invoke on, without a restart.

`TreeWatcher` keeps inotify watches on each folder tree (every sub-folder but those staging skips).
The kernel queues an event before the write, rename or delete that caused it returns, so the
invoke that follows an edit always finds it: `HotReloader.check` drains the queue without waiting
(one `poll(0)` when nothing happened) and marks the functions whose trees changed. When the invoked
function is marked, its code is staged again; if that gives another folder than the one served, the
service's `deploy(spec)` replaces the function's pool: idle environments stop, busy ones finish
their invocation with the old code, and the next ones start from the new copy.

Functions with a requirements.txt are served from their build (`build.py`). A change to their code
only makes the build out of date, which is reported (`function.not_built`): the old build goes on
serving until `sandbox-runtime build` writes a new one, which is noticed by its manifest changing
(one `stat` per invoke of such a function). Edits of the template itself are `template_reload.py`'s.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import select
import struct
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.staging import SKIP_DIRS

from . import build
from .functions import LATEST, FunctionSpec
from .logs import get_logger

if TYPE_CHECKING:
    from .service import Service

log = get_logger("reload")

# <sys/inotify.h>
_IN_ATTRIB = 0x4
_IN_CLOSE_WRITE = 0x8
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x1000000
_IN_DONT_FOLLOW = 0x2000000
_IN_ISDIR = 0x40000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = 0o2000000
# Completed writes, not each write(): an invoke during a save would otherwise stage half a file
# (it still can through IN_CREATE; the save's own IN_CLOSE_WRITE then reloads again).
_MASK = (
    _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
    | _IN_DONT_FOLLOW
)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of name


def _ignored_name(name: str) -> bool:
    """Files whose changes are not code changes: caches, editors' swap and backup files."""
    return (
        name in SKIP_DIRS
        or name.endswith((".pyc", ".swp", ".swx", ".swo", "~"))
        or name.startswith(".#")
        or (name.startswith("#") and name.endswith("#"))
        or name == "4913"  # vim's probe file
    )


class WatchError(Exception):
    pass


class TreeWatcher:
    """inotify watches over whole folder trees; `changed()` says which trees changed since last asked."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise WatchError(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._dirs: dict[int, tuple[Path, Path]] = {}  # wd -> (tree root, folder)
        self._roots: dict[Path, int | None] = {}  # tree root -> its own wd (None: gone, to watch again)
        self._lost: set[Path] = set()  # roots whose wd is None
        self._problems: set[int] = set()  # errnos already reported

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def watch(self, root: Path) -> bool:
        """Watch `root` and every folder under it. False when `root` is not a folder (yet)."""
        wd = self._add_tree(root, root) if root.is_dir() else None
        self._set_root(root, wd)
        return wd is not None

    def _set_root(self, root: Path, wd: int | None) -> None:
        self._roots[root] = wd
        if wd is None:
            self._lost.add(root)
        else:
            self._lost.discard(root)

    def _add_tree(self, root: Path, top: Path) -> int | None:
        top_wd = None
        for folder, dirs, _ in os.walk(top):
            dirs[:] = [d for d in dirs if not _ignored_name(d)]  # os.walk never enters linked folders
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder), _MASK)
            if wd < 0:
                code = ctypes.get_errno()
                if code in (errno.ENOENT, errno.ENOTDIR):
                    continue  # gone meanwhile; its parent's event marks the tree changed
                if code not in self._problems:  # once per kind of problem, not per folder
                    self._problems.add(code)
                    problem = f"cannot watch {folder} (and maybe more): {os.strerror(code)}"
                    if code == errno.ENOSPC:
                        problem += "; raise the limit: sysctl fs.inotify.max_user_watches"
                    log.warning("reload.watch_failed", folder=folder, detail=f"changes there are not seen: {problem}")
                continue
            self._dirs[wd] = (root, Path(folder))
            if top_wd is None:
                top_wd = wd
        return top_wd

    @property
    def lost(self) -> bool:
        """Whether a tree's top folder is gone (to be watched again when it is back)."""
        return bool(self._lost)

    def pending(self) -> bool:
        """Whether events are waiting (no system call but a poll(0))."""
        return bool(self._poll.poll(0))

    def changed(self) -> set[Path]:
        """The roots of the trees in which something changed since the last call. Never blocks."""
        changed: set[Path] = set()
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                self._event(wd, mask, os.fsdecode(raw.rstrip(b"\0")), changed)
        # Trees whose top folder went away (a checkout that replaced it): watched again once back.
        for root in list(self._lost):
            if root.is_dir() and self.watch(root):
                changed.add(root)
        return changed

    def _event(self, wd: int, mask: int, name: str, changed: set[Path]) -> None:
        if mask & _IN_Q_OVERFLOW:  # events were lost: count every tree as changed, and re-walk them
            for root in self._roots:
                changed.add(root)
                if self._roots[root] is not None and root.is_dir():
                    self._add_tree(root, root)
            return
        where = self._dirs.get(wd)
        if where is None:
            return
        root, folder = where
        if mask & _IN_IGNORED:  # the folder was deleted or moved away
            del self._dirs[wd]
            if self._roots.get(root) == wd:
                self._set_root(root, None)
                changed.add(root)
            return
        if name and _ignored_name(name):
            return
        changed.add(root)
        if mask & _IN_ISDIR and mask & (_IN_CREATE | _IN_MOVED_TO):
            self._add_tree(root, folder / name)
        if mask & (_IN_DELETE_SELF | _IN_MOVE_SELF) and self._roots.get(root) == wd:
            self._set_root(root, None)


class HotReloader:
    """Serves template functions from their current code (see the module's docstring)."""

    def __init__(self, service: Service, functions: Iterable[FunctionSpec]) -> None:
        self._service = service
        self._watcher = TreeWatcher()
        # What each function was loaded from: its $LATEST is reloaded only while it still is (the
        # control plane's UpdateFunctionCode points it elsewhere).
        self._code_dirs: dict[str, Path] = {}
        self._trees: dict[Path, set[str]] = {}  # watched tree -> names of the functions it serves
        self._dirty: set[str] = set()
        # Functions served from builds: their manifests (the function's, its layers'), as last seen.
        self._manifests: dict[str, list[tuple[Path, tuple[int, int] | None]]] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, str] = {}  # the last reload failure reported, per function
        for function in functions:
            if function.version != LATEST or function.code_dir is None or function.package_type != "Zip":
                continue
            self._code_dirs[function.name] = function.code_dir
            for tree in (function.code_dir, *function.layers):
                self._trees.setdefault(tree, set()).add(function.name)
        for tree in self._trees:
            self._watcher.watch(tree)
        for name in self._code_dirs:
            self._track_manifest(name)

    @property
    def functions(self) -> list[str]:
        return sorted(self._code_dirs)

    def close(self) -> None:
        for task in self._running.values():
            task.cancel()
        self._watcher.close()

    def hand_over(self, successor: HotReloader) -> None:
        """`successor` (watching already) serves from now on: it gets the changes seen here and not reloaded
        yet, and reloads under way finish on their own."""
        self._collect()
        successor._dirty.update(name for name in self._dirty | set(self._running) if name in successor._code_dirs)
        self._watcher.close()

    def _track_manifest(self, name: str) -> None:
        """Functions (and layers) with a requirements.txt are served from their build: a new build
        (its manifest replaced) is a change too."""
        function = self._service.registry.version(name, LATEST)
        root = self._service.build_root
        paths = []
        if function is not None and root is not None and function.runtime.startswith("python"):
            if build.needs_build(function):
                paths.append(build.manifest_path(root, function))
            paths += [
                build.layer_manifest_path(root, layer) for layer in function.layers if build.layer_needs_build(layer)
            ]
        if paths:
            self._manifests[name] = [(path, _stamp(path)) for path in paths]
        else:
            self._manifests.pop(name, None)

    # -- the invoke path ----------------------------------------------------------------------------

    def stale(self, function: FunctionSpec) -> bool:
        """Whether the function's code changed or is being reloaded (`check` then has something to
        await). The common case, no change, costs a poll(0) and a dict lookup."""
        if function.version != LATEST:
            return False  # a published version's code never changes
        if self._watcher.pending() or self._watcher.lost:
            self._collect()
        name = function.name
        manifests = self._manifests.get(name)
        if manifests is not None and any(_stamp(path) != seen for path, seen in manifests):
            self._dirty.add(name)
        return name in self._running or name in self._dirty

    def check(self, function: FunctionSpec) -> Awaitable[None] | None:
        """Called before each invoke: None when the function's code has not changed, else what to
        await before dispatching the invoke (the reload, started here if it is not running yet)."""
        if not self.stale(function):
            return None
        name = function.name
        running = self._running.get(name)
        if running is not None:
            return asyncio.shield(running)
        self._dirty.discard(name)
        task = asyncio.get_running_loop().create_task(self._reload(name))
        self._running[name] = task
        task.add_done_callback(lambda _: self._running.pop(name, None))
        return asyncio.shield(task)

    def _collect(self) -> None:
        for tree in self._watcher.changed():
            self._dirty.update(self._trees.get(tree, ()))

    async def _reload(self, name: str) -> None:
        service = self._service
        function = service.registry.version(name, LATEST)
        if function is None or function.code_dir != self._code_dirs.get(name):
            return  # deleted, or its code now comes from UpdateFunctionCode
        try:
            await asyncio.to_thread(self._track_manifest, name)
            changed = await asyncio.to_thread(service.code_changed, function)
        except OSError as exc:
            # E.g. the folder is being replaced (a checkout): serve what was served, try again next time.
            self._dirty.add(name)
            detail = f"cannot stage the new code, the code staged before serves: {exc}"
            if self._failed.get(name) != detail:  # not again at every invoke while it lasts
                self._failed[name] = detail
                log.warning("function.reload_failed", function=name, detail=detail)
            return
        self._failed.pop(name, None)
        if not changed:
            log.debug("function.reload_skipped", function=name, detail="nothing that is staged changed")
            return
        reason = await service.deploy(function)
        if reason is None:
            log.info("function.reloaded", function=name, code=str(service.staged_code(function)))
        else:
            log.warning("function.reload_failed", function=name, detail=reason)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def start_hot_reload(service: Service, functions: Iterable[FunctionSpec]) -> HotReloader | None:
    """A reloader for `functions`, or None (with a warning) when inotify is not available."""
    try:
        reloader = HotReloader(service, functions)
    except (WatchError, OSError) as exc:
        log.warning("reload.unavailable", detail=f"hot reload is off: {exc}")
        return None
    log.info("reload.watching", functions=reloader.functions)
    return reloader
