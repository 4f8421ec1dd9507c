"""An agent session's workspace seen from the service: path rules and safe file operations.

The workspace is a host folder (a size-capped tmpfs, `sandbox/volumes.py`) that the session's sandbox
sees read-write at /workspace and fills as its own uid. The service works on it as root, and the
sandbox may change it at any moment, so every operation here:

- takes only paths inside the workspace: relative ones, or absolute ones under /workspace/ (how the
  sandbox itself names them); `..`, other absolute paths, NUL bytes and over-long names are refused;
- resolves them itself from the workspace's root descriptor, one component at a time, each opened with
  O_NOFOLLOW relative to the folder before it: a symbolic link anywhere on the way, or at the end, is
  refused and never followed, so nothing the sandbox makes can point the service at a host file;
- reads only regular files: the type is checked with lstat before opening (a FIFO or device is never
  opened) and again on the descriptor (the same inode, or the sandbox swapped it meanwhile);
- writes a temporary file and renames it over the target: a link the sandbox put there is replaced,
  not followed; what it writes (files and folders) is given to the sandbox's uid;
- bounds what it reads, writes and lists.

Blocking (file system calls): the session manager runs these in worker threads.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import stat
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sandbox import WORKSPACE_PATH

from .session_errors import InvalidPathError, ResourceLimitError, SessionFileNotFoundError

MAX_DEPTH = 32
_MAX_NAME = 255
_MAX_PATH = 4096
_TEMP_PREFIX = ".sandbox-upload-"
_CHUNK = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class FileEntry:
    """A regular file of the workspace: its path relative to /workspace, size, modification time."""

    name: str
    size: int
    modified: float  # seconds since the epoch

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "modified": iso_time(self.modified)}


def iso_time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_path(raw: object, *, folder: bool = False) -> tuple[str, ...]:
    """A workspace path as its components. `folder`: the workspace itself ("", "/workspace") is allowed."""
    if not isinstance(raw, str):
        raise InvalidPathError("a path must be a string")
    if "\0" in raw or _size(raw) > _MAX_PATH:
        raise InvalidPathError("the path contains a NUL byte, a lone surrogate, or is too long")
    path = raw
    if path.startswith("/"):
        if path != WORKSPACE_PATH and not path.startswith(WORKSPACE_PATH + "/"):
            raise InvalidPathError(
                f"'{raw}' is outside the workspace: give a path relative to it, or one under {WORKSPACE_PATH}/"
            )
        path = path[len(WORKSPACE_PATH) :]
    parts = tuple(part for part in path.split("/") if part not in ("", "."))
    if ".." in parts:
        raise InvalidPathError(f"'{raw}': '..' is not allowed in workspace paths")
    if any(_size(part) > _MAX_NAME for part in parts) or len(parts) > MAX_DEPTH:
        raise InvalidPathError(f"'{raw}': a name is longer than {_MAX_NAME} bytes or the path is too deep")
    if not parts and not folder:
        raise InvalidPathError("a file path is needed, not the workspace itself")
    return parts


def _size(name: str) -> int:
    """A name's length in UTF-8 bytes; one no file system can hold (a lone surrogate from a JSON "\\ud800"
    escape, which has no UTF-8 form) counts as too long."""
    try:
        return len(name.encode())
    except UnicodeEncodeError:
        return _MAX_PATH + 1


def display(parts: Iterable[str]) -> str:
    return "/".join(parts)


class Workspace:
    """One session's workspace folder (`root`), whose content belongs to the sandbox's `uid`."""

    def __init__(self, root: Path, uid: int, *, max_file_bytes: int, max_entries: int = 10000) -> None:
        self.root = root
        self.uid = uid
        self.max_file_bytes = max_file_bytes
        self.max_entries = max_entries

    # -- reading --------------------------------------------------------------------------------

    def open_file(self, parts: tuple[str, ...]) -> tuple[int, int]:
        """A read-only descriptor on the regular file at `parts`, and its size (at most
        `max_file_bytes`). The caller closes the descriptor."""
        folder = self._open_folder(parts[:-1])
        try:
            info = self._lstat(folder, parts)
            if stat.S_ISDIR(info.st_mode):
                raise InvalidPathError(f"'{display(parts)}' is a folder, not a file")
            if not stat.S_ISREG(info.st_mode):
                raise InvalidPathError(f"'{display(parts)}' is {_kind(info.st_mode)}, not a regular file")
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                             dir_fd=folder)  # fmt: skip
            except OSError as exc:
                raise self._path_error(exc, parts) from None
        finally:
            os.close(folder)
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino) or not stat.S_ISREG(opened.st_mode):
            os.close(fd)
            raise InvalidPathError(f"'{display(parts)}' changed while it was being opened")
        if opened.st_size > self.max_file_bytes:
            os.close(fd)
            raise ResourceLimitError(
                f"'{display(parts)}' is {opened.st_size} bytes, over the {self.max_file_bytes}-byte limit for files",
                status=413,
            )
        return fd, opened.st_size

    def read(self, parts: tuple[str, ...]) -> bytes:
        """The content of a regular file (at most `max_file_bytes`)."""
        fd, size = self.open_file(parts)
        try:
            return b"".join(read_chunks(fd, size))
        finally:
            os.close(fd)

    def files(self, parts: tuple[str, ...] = ()) -> tuple[list[FileEntry], bool]:
        """Every regular file under the folder `parts`, recursively (links and special files are
        skipped, never followed), sorted by name; and whether the listing stopped at `max_entries`."""
        folder = self._open_folder(parts)
        entries: list[FileEntry] = []
        try:
            truncated = self._walk(folder, parts, entries, depth=len(parts))
        finally:
            os.close(folder)
        entries.sort(key=lambda entry: entry.name)
        return entries, truncated

    def _walk(self, folder: int, parts: tuple[str, ...], out: list[FileEntry], depth: int) -> bool:
        with os.scandir(folder) as listing:
            children = sorted(listing, key=lambda entry: entry.name)
        for entry in children:
            if len(out) >= self.max_entries:
                return True
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if stat.S_ISREG(info.st_mode) and not entry.name.startswith(_TEMP_PREFIX):
                out.append(FileEntry(display((*parts, entry.name)), info.st_size, info.st_mtime))
            elif stat.S_ISDIR(info.st_mode) and depth < MAX_DEPTH:
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=folder)
                except OSError:
                    continue  # replaced by a link or removed meanwhile: skipped
                try:
                    if self._walk(child, (*parts, entry.name), out, depth + 1):
                        return True
                finally:
                    os.close(child)
        return False

    def usage(self) -> dict[str, int]:
        """Bytes used and available in the workspace's file system (its tmpfs)."""
        info = os.statvfs(self.root)
        return {
            "used_bytes": (info.f_blocks - info.f_bfree) * info.f_frsize,
            "size_bytes": info.f_blocks * info.f_frsize,
        }

    # -- writing --------------------------------------------------------------------------------

    def write(self, parts: tuple[str, ...], content: bytes | BinaryIO | Iterable[bytes]) -> FileEntry:
        """Write a regular file at `parts` (folders on the way are made), replacing what was there
        unless it is a folder. At most `max_file_bytes` (ResourceLimitError, 413)."""
        folder = self._open_folder(parts[:-1], create=True)
        temp = f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=folder)  # fmt: skip
            try:
                size = self._fill(fd, parts, content)
                os.fchown(fd, self.uid, self.uid)
                os.fchmod(fd, 0o644)
                modified = os.fstat(fd).st_mtime
            finally:
                os.close(fd)
            try:
                os.rename(temp, parts[-1], src_dir_fd=folder, dst_dir_fd=folder)
            except OSError as exc:
                raise self._path_error(exc, parts) from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=folder)
            raise
        finally:
            os.close(folder)
        return FileEntry(display(parts), size, modified)

    def _fill(self, fd: int, parts: tuple[str, ...], content: bytes | BinaryIO | Iterable[bytes]) -> int:
        size = 0
        for chunk in _chunks(content):
            size += len(chunk)
            if size > self.max_file_bytes:
                raise ResourceLimitError(
                    f"'{display(parts)}' is over the {self.max_file_bytes}-byte limit for files", status=413
                )
            view = memoryview(chunk)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise ResourceLimitError("the session's workspace is full", status=507) from None
                raise
        return size

    def upload_target(self, filename: object, path: object = None) -> tuple[str, ...]:
        """Where an uploaded file goes: the workspace's root under its own name (`filename`, without
        any folder the client put in it); inside the folder `path` when it ends with "/" or is a
        folder; else at the file path `path`."""
        if not isinstance(filename, str):
            raise InvalidPathError("the uploaded file has no name")
        name = filename.replace("\\", "/").rsplit("/", 1)[-1]
        if name in ("", ".", "..") or "\0" in name or _size(name) > _MAX_NAME:
            raise InvalidPathError(f"'{filename}' is not a usable file name")
        if path is None or path == "":
            return (name,)
        if not isinstance(path, str):
            raise InvalidPathError("path must be a string")
        if path.endswith("/") or path == WORKSPACE_PATH:
            return (*parse_path(path, folder=True), name)
        parts = parse_path(path)
        return (*parts, name) if self.is_folder(parts) else parts

    def is_folder(self, parts: tuple[str, ...]) -> bool:
        """Whether `parts` is a folder (not a link to one)."""
        try:
            folder = self._open_folder(parts)
        except (SessionFileNotFoundError, InvalidPathError):
            return False
        os.close(folder)
        return True

    # -- resolution -----------------------------------------------------------------------------

    def _open_folder(self, parts: tuple[str, ...], *, create: bool = False) -> int:
        """A descriptor on the folder `parts`, walked one O_NOFOLLOW component at a time from the root."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for i, name in enumerate(parts):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise SessionFileNotFoundError(f"'{display(parts[: i + 1])}' does not exist") from None
                    child = self._make_folder(fd, name, parts[: i + 1])
                except OSError as exc:
                    raise self._path_error(exc, parts[: i + 1], folder=True) from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _make_folder(self, parent: int, name: str, parts: tuple[str, ...]) -> int:
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            pass  # made meanwhile (or a link: the open below refuses it)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ResourceLimitError("the session's workspace is full", status=507) from None
            raise self._path_error(exc, parts, folder=True) from None
        os.chown(name, self.uid, self.uid, dir_fd=parent, follow_symlinks=False)
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise self._path_error(exc, parts, folder=True) from None

    @staticmethod
    def _lstat(folder: int, parts: tuple[str, ...]) -> os.stat_result:
        try:
            return os.stat(parts[-1], dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            raise SessionFileNotFoundError(f"File '{display(parts)}' does not exist") from None

    @staticmethod
    def _path_error(exc: OSError, parts: tuple[str, ...], *, folder: bool = False) -> Exception:
        where = display(parts)
        if exc.errno == errno.ENOENT:
            return SessionFileNotFoundError(f"'{where}' does not exist")
        if exc.errno == errno.ELOOP:
            return InvalidPathError(f"'{where}' is a symbolic link: links are not followed")
        if exc.errno == errno.ENOTDIR:
            return InvalidPathError(f"'{where}' is not a folder" if folder else f"a part of '{where}' is not a folder")
        if exc.errno == errno.EISDIR:
            return InvalidPathError(f"'{where}' is a folder")
        if exc.errno == errno.ENOSPC:
            return ResourceLimitError("the session's workspace is full", status=507)
        if exc.errno == errno.ENAMETOOLONG:
            return InvalidPathError(f"'{where}' is too long")
        return exc


def read_chunks(fd: int, size: int, chunk: int = _CHUNK) -> Iterator[bytes]:
    """At most `size` bytes of `fd`, in chunks (a file the sandbox grows meanwhile is cut at `size`)."""
    left = size
    while left > 0:
        data = os.read(fd, min(chunk, left))
        if not data:
            return
        left -= len(data)
        yield data


def _chunks(content: bytes | BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    if isinstance(content, bytes | bytearray | memoryview):
        yield bytes(content)
        return
    read = getattr(content, "read", None)
    if read is not None:
        while data := read(_CHUNK):
            yield data
        return
    yield from content  # type: ignore[misc]


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"
