"""Read-only copies of code that any sandbox uid can read, owned by the service.

A user's code folder may sit in a 0700 home or temp folder the sandbox uid cannot traverse, and
bwrap resolves bind sources as that uid. So the service stages a copy it owns, hard-linking files
that are already world-readable and copying the others with readable modes, and never loosens the
user's own permissions. Copies are keyed by a fingerprint of the tree, so an unchanged tree is
staged once.

Layers are staged the same way, merged into one folder (the sandbox's /opt) in the function's order,
later layers replacing what earlier ones put at the same path, as Lambda extracts them; one merged
copy per distinct list of layers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

# Never part of a function's code: bytecode caches, VCS data, and the build outputs of `sam build`
# and `sandbox-runtime build` (which sit inside CodeUri when CodeUri is the template's folder).
SKIP_DIRS = frozenset({"__pycache__", ".git", ".aws-sam", ".sandbox-runtime"})
_SKIP_DIRS = SKIP_DIRS


def fingerprint(src: Path) -> str:
    """A digest of the tree's names, sizes, modes and modification times."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            rel = os.path.relpath(path, src)
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mode}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def stage_tree(src: Path, dest: Path) -> None:
    """Copy `src` into the new folder `dest`: folders 0755, files 0644 (0755 if executable)."""
    os.mkdir(dest, 0o755)
    os.chmod(dest, 0o755)
    src_dev = os.stat(src).st_dev
    dest_dev = os.stat(dest).st_dev
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        rel = os.path.relpath(root, src)
        out_root = dest if rel == "." else dest / rel
        for name in dirs:
            source = os.path.join(root, name)
            target = out_root / name
            if os.path.islink(source):
                os.symlink(os.readlink(source), target)
            else:
                os.mkdir(target, 0o755)
                os.chmod(target, 0o755)
        for name in files:
            _stage_file(os.path.join(root, name), out_root / name, same_fs=src_dev == dest_dev)


def merge_trees(sources: Sequence[Path], dest: Path) -> None:
    """Copy each of `sources` in turn into the new folder `dest`, as `stage_tree` copies one: a file,
    link or folder of a later source replaces whatever an earlier one put at the same path (folders
    merge). Links are copied as links and never followed, neither in a source nor in `dest`."""
    os.mkdir(dest, 0o755)
    os.chmod(dest, 0o755)
    dest_dev = os.stat(dest).st_dev
    for src in sources:
        same_fs = os.stat(src).st_dev == dest_dev
        for root, dirs, files in os.walk(src):  # never descends into linked folders
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            rel = os.path.relpath(root, src)
            out_root = dest if rel == "." else dest / rel  # a real folder of ours: made below, top-down
            for name in dirs:
                source = os.path.join(root, name)
                target = out_root / name
                if os.path.islink(source):
                    _remove(target)
                    os.symlink(os.readlink(source), target)
                elif not _is_real_dir(target):
                    _remove(target)
                    os.mkdir(target, 0o755)
                    os.chmod(target, 0o755)
            for name in files:
                target = out_root / name
                _remove(target)
                _stage_file(os.path.join(root, name), target, same_fs=same_fs)


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    """Remove what an earlier layer put at `path` (a link itself, never what it points to)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _stage_file(source: str, target: Path, *, same_fs: bool) -> None:
    st = os.lstat(source)
    if stat.S_ISLNK(st.st_mode):
        # Links resolve inside the sandbox's own mount namespace, never on the host.
        os.symlink(os.readlink(source), target)
        return
    if not stat.S_ISREG(st.st_mode):
        return  # FIFOs, sockets and devices have no place in a code folder
    mode = 0o755 if st.st_mode & 0o111 else 0o644
    world_readable = st.st_mode & stat.S_IROTH and (not st.st_mode & 0o111 or st.st_mode & stat.S_IXOTH)
    if same_fs and world_readable:
        try:
            os.link(source, target, follow_symlinks=False)  # never through a link swapped in
            return
        except OSError:
            pass
    shutil.copyfile(source, target, follow_symlinks=False)
    os.chmod(target, mode)


class CodeStager:
    """Stages code trees under one service-owned root, once per distinct tree."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        self._lock = threading.Lock()

    def stage(self, src: Path, *, name: str = "code") -> Path:
        src = Path(src).resolve()
        return self._once(f"{name}-{fingerprint(src)}", lambda tmp: stage_tree(src, tmp))

    def stage_merged(self, sources: Sequence[Path], *, name: str = "opt") -> Path:
        """One folder holding `sources` merged in order (see `merge_trees`), staged once per distinct
        list of trees: functions with the same layers share it."""
        resolved = [Path(src).resolve() for src in sources]
        listing = "\n".join(fingerprint(src) for src in resolved)
        key = f"{name}-{hashlib.sha256(listing.encode()).hexdigest()[:20]}"
        return self._once(key, lambda tmp: merge_trees(resolved, tmp))

    def _once(self, key: str, make: Callable[[Path], None]) -> Path:
        """`root/key`, made by `make(tmp)` into a temporary folder renamed into place, unless it exists
        (so concurrent starts never see half a folder)."""
        dest = self.root / key
        with self._lock:
            if dest.is_dir():
                return dest
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
            tmp.rmdir()
            try:
                make(tmp)
                os.rename(tmp, dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return dest
