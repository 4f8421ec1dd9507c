"""Deployment packages: a function's .zip checked, hashed as AWS does, and unpacked safely.

A package is untrusted input. Unpacking refuses absolute names, `..` and anything that would land
outside the target; links are made last (so no file is ever written through one) and are kept as links,
which resolve inside the sandbox like those of a staged code folder. Sizes are bounded as on Lambda.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import InvalidParameterValueException

MAX_UNZIPPED_BYTES = 262_144_000  # AccountLimit.CodeSizeUnzipped
MAX_ZIPPED_BYTES = 52_428_800  # AccountLimit.CodeSizeZipped (a direct upload)
_MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class Package:
    data: bytes

    @property
    def sha256(self) -> str:
        """CodeSha256: the base64 of the SHA-256 of the zip bytes."""
        return base64.b64encode(hashlib.sha256(self.data).digest()).decode()

    @property
    def hex_digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)


def bad_zip() -> InvalidParameterValueException:
    return InvalidParameterValueException(
        "Could not unzip uploaded file. Please check your file, then try to upload again."
    )


def check(data: bytes) -> Package:
    """A package that can be unpacked within Lambda's limits, or InvalidParameterValueException."""
    if len(data) > MAX_ZIPPED_BYTES:
        raise InvalidParameterValueException(f"Zipped size must be smaller than {MAX_ZIPPED_BYTES} bytes")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
            if len(entries) > _MAX_ENTRIES:
                raise bad_zip()
            total = sum(entry.file_size for entry in entries)
            for entry in entries:
                _member_path(entry.filename)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise bad_zip() from None
    if total > MAX_UNZIPPED_BYTES:
        raise InvalidParameterValueException(f"Unzipped size must be smaller than {MAX_UNZIPPED_BYTES} bytes")
    return Package(data)


def _member_path(name: str) -> PurePosixPath | None:
    """The relative path a member unpacks to (None for the root itself); refuses escapes."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise bad_zip()
    parts = [part for part in path.parts if part not in ("", ".")]
    return PurePosixPath(*parts) if parts else None


def unpack(package: Package, target: Path) -> Path:
    """Unpack into `target` (which must not exist), atomically: a reader sees all of it or nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        _unpack_into(package.data, staging)
        staging.chmod(0o755)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _unpack_into(data: bytes, root: Path) -> None:
    links: list[tuple[Path, str]] = []
    written = 0
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for entry in archive.infolist():
            relative = _member_path(entry.filename)
            if relative is None:
                continue
            destination = root / relative
            mode = entry.external_attr >> 16
            if entry.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            _make_parents(root, relative)
            if stat.S_ISLNK(mode):
                links.append((destination, archive.read(entry).decode("utf-8", "surrogateescape")))
                continue
            # Only the permission bits that matter: executable or not, readable by the sandbox uid.
            perms = 0o755 if mode & 0o111 else 0o644
            fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, perms)
            with os.fdopen(fd, "wb") as out, archive.open(entry) as source:
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > MAX_UNZIPPED_BYTES:  # the sizes in the directory may lie
                        raise InvalidParameterValueException(
                            f"Unzipped size must be smaller than {MAX_UNZIPPED_BYTES} bytes"
                        )
                    out.write(chunk)
            os.chmod(destination, perms)
    for destination, link in links:
        if not destination.exists() and not destination.is_symlink():
            os.symlink(link, destination)


def _make_parents(root: Path, relative: PurePosixPath) -> None:
    """Create the member's folders, refusing to go through anything but a real folder of ours."""
    current = root
    for part in relative.parts[:-1]:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            raise bad_zip()
        current.mkdir(exist_ok=True)
    if (root / relative).exists() or (root / relative).is_symlink():
        raise bad_zip()  # a duplicate member


def folder_digest(folder: Path) -> tuple[str, int]:
    """CodeSha256 and CodeSize for a code folder (a template's CodeUri): a hash over the relative names
    and contents of its files, and their total size. Stable for the same content."""
    digest = hashlib.sha256()
    size = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            relative = path.relative_to(folder).as_posix()
            digest.update(relative.encode() + b"\0")
            try:
                if path.is_symlink():
                    digest.update(b"link:" + os.readlink(path).encode() + b"\0")
                    continue
                with open(path, "rb") as source:
                    while chunk := source.read(1 << 20):
                        digest.update(chunk)
                        size += len(chunk)
            except OSError:
                continue
            digest.update(b"\0")
    return base64.b64encode(digest.digest()).decode(), size
