"""The control plane's state: what the Lambda API says about each function beyond how it runs.

A function's `FunctionSpec` (in the registry) is what the service runs; its `Meta` here is what
GetFunction shows about it: role, code hash and size, revision, state, tags, reserved concurrency,
event-invoke configuration. Published versions get a `Meta` of their own.

Functions created through the API are stored under SANDBOX_DATA_DIR and come back after a restart:
`functions/<name>.json` (configuration, versions, aliases, tags, ...) and the unpacked code,
content-addressed, under `code/<sha256>/` (the package itself beside it as `<sha256>.zip`). Template
functions are the template's: changes made to them through the API last until the service stops.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import code
from .functions import Alias, FunctionSpec, ImageConfig
from .logs import get_logger

log = get_logger("catalog")

DEFAULT_ROLE_NAME = "sandbox-runtime"


def now_timestamp() -> str:
    """LastModified as Lambda writes it: 2020-04-10T19:06:32.563+0000."""
    moment = datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def new_revision() -> str:
    return str(uuid.uuid4())


@dataclass
class Meta:
    """One function version as the control plane shows it."""

    role: str
    code_sha256: str
    code_size: int
    last_modified: str = field(default_factory=now_timestamp)
    revision_id: str = field(default_factory=new_revision)
    state: str = "Active"  # Pending | Active | Failed
    state_reason: str | None = None
    state_reason_code: str | None = None
    last_update_status: str | None = "Successful"  # None right after CreateFunction
    last_update_reason: str | None = None
    last_update_reason_code: str | None = None
    package: str | None = None  # the hex SHA-256 of the stored .zip (API functions with ZipFile)
    source_revision: str | None = None  # a published version: the RevisionId of $LATEST it was made from

    def touched(self, **changes: Any) -> Meta:
        return replace(self, last_modified=now_timestamp(), revision_id=new_revision(), **changes)


@dataclass
class Entry:
    """Everything the control plane keeps about one function."""

    meta: Meta  # of $LATEST
    source: str = "api"  # api | template
    versions: dict[str, Meta] = field(default_factory=dict)
    last_version: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    event_invoke_config: dict[str, Any] | None = None
    updating: bool = False


class Store:
    """API-created functions on disk. Every write is atomic (a temporary file renamed over)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.functions = root / "functions"
        self.code = root / "code"

    def open(self) -> None:
        for folder in (self.root, self.functions, self.code):
            folder.mkdir(parents=True, exist_ok=True)
        # Sandboxes (other uids) read unpacked code through here: traversable, never listable.
        for folder in (self.root, self.code):
            os.chmod(folder, 0o711)
        os.chmod(self.functions, 0o700)

    def keep_package(self, package: code.Package) -> Path:
        """Store a package and its unpacked code (once per content); the code folder."""
        folder = self.code / package.hex_digest
        if not folder.is_dir():
            code.unpack(package, folder)
        archive = self.code / f"{package.hex_digest}.zip"
        if not archive.exists():
            _write_atomic(archive, package.data, mode=0o600)
        return folder

    def package_path(self, digest: str) -> Path:
        return self.code / f"{digest}.zip"

    def save(self, name: str, document: dict[str, Any]) -> None:
        _write_atomic(self.functions / f"{name}.json", json.dumps(document, indent=1).encode(), mode=0o600)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.functions / f"{name}.json").unlink()

    def load(self) -> list[dict[str, Any]]:
        documents = []
        for path in sorted(self.functions.glob("*.json")):
            try:
                documents.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                log.error("catalog.unreadable", path=str(path), error=str(exc))
        return documents

    def collect_garbage(self, referenced: set[str]) -> None:
        """Remove stored code no function version refers to any more."""
        for path in self.code.iterdir():
            digest = path.name.removesuffix(".zip")
            if len(digest) == 64 and digest not in referenced:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


# -- (de)serialising specs --------------------------------------------------------------------------


def spec_document(spec: FunctionSpec) -> dict[str, Any]:
    document = asdict(spec)
    document["code_dir"] = str(spec.code_dir) if spec.code_dir is not None else None
    document["environment"] = dict(spec.environment)
    document["layers"] = [str(layer) for layer in spec.layers]
    return document


def spec_from_document(document: dict[str, Any]) -> FunctionSpec:
    known = {f.name for f in fields(FunctionSpec)}
    values = {key: value for key, value in document.items() if key in known}
    values["code_dir"] = Path(values["code_dir"]) if values.get("code_dir") else None
    values["architectures"] = tuple(values.get("architectures") or ("x86_64",))
    values["layers"] = tuple(Path(layer) for layer in values.get("layers") or ())
    config = values.get("image_config") or {}
    values["image_config"] = ImageConfig(
        entry_point=tuple(config["entry_point"]) if config.get("entry_point") is not None else None,
        command=tuple(config["command"]) if config.get("command") is not None else None,
        working_directory=config.get("working_directory"),
    )
    return FunctionSpec(**values)


def entry_document(entry: Entry, latest: FunctionSpec, versions: list[FunctionSpec], aliases: dict[str, Alias]) -> dict:
    return {
        "latest": spec_document(latest),
        "meta": asdict(entry.meta),
        "versions": [{"spec": spec_document(v), "meta": asdict(entry.versions[v.version])} for v in versions],
        "last_version": entry.last_version,
        "aliases": [asdict(alias) for alias in aliases.values()],
        "tags": entry.tags,
        "event_invoke_config": entry.event_invoke_config,
    }


def entry_from_document(document: dict[str, Any]) -> tuple[Entry, FunctionSpec, list[FunctionSpec], list[Alias]]:
    versions = [spec_from_document(item["spec"]) for item in document.get("versions", [])]
    entry = Entry(
        meta=Meta(**document["meta"]),
        versions={item["spec"]["version"]: Meta(**item["meta"]) for item in document.get("versions", [])},
        last_version=int(document.get("last_version", 0)),
        tags=dict(document.get("tags") or {}),
        event_invoke_config=document.get("event_invoke_config"),
    )
    aliases = [Alias(**{**item, "weights": dict(item.get("weights") or {})}) for item in document.get("aliases", [])]
    return entry, spec_from_document(document["latest"]), versions, aliases


def template_meta(account_id: str) -> Meta:
    """What GetFunction shows for a template function: a placeholder role; the code's digest is
    computed when first shown (`code.folder_digest`), not at every start."""
    return Meta(role=f"arn:aws:iam::{account_id}:role/{DEFAULT_ROLE_NAME}", code_sha256="", code_size=0)
