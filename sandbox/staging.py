"""Read-only copies of code that any sandbox uid can read, owned by the service.

A user's code folder may sit in a 0700 home or temp folder the sandbox uid cannot traverse, and
bwrap resolves bind sources as that uid. So the service stages a copy it owns, hard-linking files
that are already world-readable and copying the others with readable modes, and never loosens the
user's own permissions. Copies are keyed by a fingerprint of the tree, so an unchanged tree is
staged once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

_SKIP_DIRS = {"__pycache__", ".git", ".aws-sam"}


def fingerprint(src: Path) -> str:
    """A digest of the tree's names, sizes, modes and modification times."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
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
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
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
        key = f"{name}-{fingerprint(src)}"
        dest = self.root / key
        with self._lock:
            if dest.is_dir():
                return dest
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
            tmp.rmdir()
            try:
                stage_tree(src, tmp)
                os.rename(tmp, dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return dest
