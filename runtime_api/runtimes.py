"""Lambda runtime names → what to run inside the sandbox.

`python3.x` runs our stdlib bootstrap (/var/runtime/sandbox_bootstrap) on the host's `python3.x`,
or, when that interpreter is missing, on the host's `python3` with one warning (refused with
--strict-runtimes). `provided`, `provided.al2` and `provided.al2023` run the function's own
executable /var/task/bootstrap. The interpreter must be reachable by the unprivileged sandbox uid:
anything under /usr is (it is bound read-only); an installation elsewhere has its prefix bound
read-only when every folder above it is world-searchable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.staging import fingerprint, stage_tree

from .functions import FunctionSpec

BOOTSTRAP_PACKAGE = "sandbox_bootstrap"
_BOOTSTRAP_SOURCE = Path(__file__).resolve().parent.parent / "bootstrap"
# Launch line for our bootstrap: independent of PYTHONPATH/PYTHONSAFEPATH a function may set.
_LAUNCH = f"import sys; sys.path.insert(0, '/var/runtime'); from {BOOTSTRAP_PACKAGE}.main import main; main()"
# A pre-started generic sandbox's launch (bootstrap/preload.py): the same start, then it waits for a function.
_PRELOAD = f"import sys; sys.path.insert(0, '/var/runtime'); from {BOOTSTRAP_PACKAGE}.preload import run; run()"
_PYTHON_RUNTIME = re.compile(r"^python(3\.\d+)$")
_PROVIDED_RUNTIMES = {"provided", "provided.al2", "provided.al2023"}
_DEFAULT_DIRS = ("/usr/local/bin", "/usr/bin", "/bin")


class RuntimeUnavailable(Exception):
    """The runtime cannot run here (unknown, or its interpreter is missing under --strict-runtimes)."""


@dataclass(frozen=True)
class RuntimeLaunch:
    runtime: str
    command: tuple[str, ...]
    cwd: str
    uses_bootstrap: bool  # our /var/runtime bootstrap is mounted
    interpreter: Path | None = None
    extra_ro_binds: tuple[Path, ...] = ()
    execution_env: str | None = None  # AWS_EXECUTION_ENV, absent on provided runtimes
    image_env: Mapping[str, str] | None = None  # PackageType Image: the image's own ENV
    handler: str | None = None  # PackageType Image: the CMD's first word, which Lambda presents as _HANDLER
    preload: tuple[str, ...] | None = None  # how a generic sandbox gets this runtime ready (sandbox/prestart.py)


@dataclass(frozen=True)
class _Interpreter:
    path: Path
    version: str  # "3.11"
    binds: tuple[Path, ...]


class RuntimeResolver:
    """Resolves runtime names once each; collects the warnings to show at start."""

    def __init__(self, *, strict: bool = False, search_dirs: Sequence[str] | None = None) -> None:
        self.strict = strict
        self.search_dirs = list(search_dirs) if search_dirs is not None else _search_dirs()
        self.warnings: list[str] = []
        self._cache: dict[str, RuntimeLaunch] = {}

    def resolve(self, runtime: str) -> RuntimeLaunch:
        if runtime not in self._cache:
            self._cache[runtime] = self._resolve(runtime)
        return self._cache[runtime]

    def default_python(self) -> RuntimeLaunch:
        """The host's `python3`, resolved as the python3.x runtime of its version (agent sessions run on it)."""
        interpreter = self._find("python3")
        if interpreter is None:
            raise RuntimeUnavailable(
                f"python3 is not installed where sandboxes can reach it (searched {', '.join(self.search_dirs)})"
            )
        return self.resolve(f"python{interpreter.version}")

    def interpreters(self) -> set[Path]:
        return {launch.interpreter for launch in self._cache.values() if launch.interpreter}

    def _resolve(self, runtime: str) -> RuntimeLaunch:
        if runtime in _PROVIDED_RUNTIMES:
            return RuntimeLaunch(runtime, ("/var/task/bootstrap",), "/var/task", uses_bootstrap=False)
        match = _PYTHON_RUNTIME.match(runtime)
        if not match:
            raise RuntimeUnavailable(
                f"runtime {runtime} is not supported here (supported: python3.x, provided, provided.al2, "
                "provided.al2023)"
            )
        wanted = f"python{match[1]}"
        interpreter = self._find(wanted)
        if interpreter is None:
            if self.strict:
                raise RuntimeUnavailable(
                    f"runtime {runtime} needs the interpreter {wanted}, which is not installed where sandboxes "
                    f"can reach it (searched {', '.join(self.search_dirs)}); install it or drop --strict-runtimes"
                )
            interpreter = self._find("python3")
            if interpreter is None:
                raise RuntimeUnavailable(f"runtime {runtime}: neither {wanted} nor python3 is installed")
            self.warnings.append(
                f"runtime {runtime}: {wanted} is not installed where sandboxes can reach it; functions on "
                f"{runtime} run on {interpreter.path} (Python {interpreter.version}) instead "
                "(--strict-runtimes refuses this)"
            )
        return RuntimeLaunch(
            runtime,
            (str(interpreter.path), "-c", _LAUNCH),
            "/var/runtime",
            uses_bootstrap=True,
            interpreter=interpreter.path,
            extra_ro_binds=interpreter.binds,
            execution_env=f"AWS_Lambda_{runtime}",
            preload=(str(interpreter.path), "-c", _PRELOAD),
        )

    def _find(self, name: str) -> _Interpreter | None:
        for folder in self.search_dirs:
            candidate = Path(folder) / name
            if not os.access(candidate, os.X_OK):
                continue
            real = candidate.resolve()
            if not _is_elf(real):
                continue  # e.g. pyenv's shell shims: they would not run inside the sandbox
            binds = _binds_for(real)
            if binds is None:
                continue
            version = _version_of(real)
            if version is None or (name != "python3" and f"python{version}" != name):
                continue
            return _Interpreter(real, version, binds)
        return None


def _search_dirs() -> list[str]:
    dirs: list[str] = []
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), *_DEFAULT_DIRS]:
        if folder and folder not in dirs:
            dirs.append(folder)
    return dirs


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def reachable_by_sandboxes(folder: Path) -> bool:
    """Whether an unprivileged sandbox uid can reach `folder` (every folder on the way searchable)."""
    return _world_searchable([folder, *folder.parents])


def _world_searchable(folders: Iterable[Path]) -> bool:
    for folder in folders:
        try:
            mode = folder.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def _binds_for(interpreter: Path) -> tuple[Path, ...] | None:
    """Folders to bind so the sandbox can run `interpreter`, or None if the sandbox uid cannot reach it."""
    if interpreter.is_relative_to("/usr"):
        return ()
    prefix = interpreter.parent.parent  # <prefix>/bin/pythonX.Y
    if not _world_searchable([prefix, *prefix.parents]) or not prefix.stat().st_mode & stat.S_IROTH:
        return None
    return (prefix,)


def _version_of(interpreter: Path) -> str | None:
    match = re.fullmatch(r"python(3\.\d+)", interpreter.name)
    if match:
        return match[1]
    try:
        out = subprocess.run(
            [str(interpreter), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            env={},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# What Lambda's Python runtimes carry in /var/runtime besides the runtime client: the AWS SDK.
# Handlers commonly create boto3 clients at import time, so they must be importable as on AWS.
_SDK_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")


def provision_runtime_dir(cache_root: Path, interpreters: Iterable[Path]) -> Path:
    """The folder mounted at /var/runtime: our bootstrap and the SDK, world-readable and
    byte-compiled for each interpreter (the sandbox cannot write __pycache__). Built once per
    content and interpreter set under `cache_root`, then reused by every later start."""
    interpreters = sorted(set(interpreters))
    sources = {BOOTSTRAP_PACKAGE: _BOOTSTRAP_SOURCE, **_sdk_sources()}
    key = hashlib.sha256()
    for name, source in sorted(sources.items()):
        key.update(f"{name}\0{fingerprint(source) if source.is_dir() else source.stat().st_mtime_ns}\n".encode())
    for interpreter in interpreters:
        key.update(f"{interpreter}\0{interpreter.stat().st_mtime_ns}\n".encode())
    runtime_dir = cache_root / f"runtime-{key.hexdigest()[:20]}"
    if runtime_dir.is_dir():
        os.utime(runtime_dir)  # marks it in use for pruning
        return runtime_dir
    cache_root.mkdir(parents=True, exist_ok=True)
    os.chmod(cache_root, 0o755)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_root))
    try:
        for name, source in sources.items():
            if source.is_dir():
                stage_tree(source, building / name)
            else:
                shutil.copyfile(source, building / source.name)
        for interpreter in interpreters:
            compile_python_tree(interpreter, building)
        for root, dirs, files in os.walk(building):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        os.chmod(building, 0o755)
        try:
            os.rename(building, runtime_dir)
        except OSError:  # another service built the same folder meanwhile
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    _prune(cache_root, keep=runtime_dir)
    return runtime_dir


_COMPILE = "import py_compile, sys\nfor f in sys.stdin.read().split('\\0'):\n    py_compile.compile(f, quiet=2)\n"


def compile_python_tree(interpreter: Path, tree: Path) -> None:
    """Byte-compile the regular .py files under `tree` for `interpreter`, writing __pycache__ there.

    Only files listed here are compiled, never through a symbolic link: this runs as root over
    code a template names, and a link could otherwise pull a host file into readable bytecode.
    """
    files = []
    for root, dirs, names in os.walk(tree):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        files += [os.path.join(root, n) for n in names if n.endswith(".py") and _is_regular(os.path.join(root, n))]
    if files:
        subprocess.run(
            [str(interpreter), "-I", "-c", _COMPILE], input="\0".join(files), text=True, env={}, capture_output=True
        )


def _is_regular(path: str) -> bool:
    return stat.S_ISREG(os.lstat(path).st_mode)


def _sdk_sources() -> dict[str, Path]:
    sources = {}
    for name in _SDK_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        sources[name] = origin.parent if origin.name == "__init__.py" else origin
    return sources


def _prune(cache_root: Path, keep: Path, max_age_days: float = 7) -> None:
    """Remove runtime folders no service has used for a week."""
    cutoff = time.time() - max_age_days * 86400
    for path in cache_root.glob("runtime-*"):
        if path != keep and path.stat().st_mtime < cutoff:
            shutil.rmtree(path, ignore_errors=True)


def image_launch(function: FunctionSpec, image: Mapping[str, Any]) -> RuntimeLaunch:
    """How a PackageType Image function starts, from `docker image inspect` and its ImageConfig: the
    entry point and command (each overridable), the working folder, and the image's ENV."""
    config = image.get("Config") or {}
    override = function.image_config
    entry_point = override.entry_point if override.entry_point is not None else tuple(config.get("Entrypoint") or ())
    command = override.command if override.command is not None else tuple(config.get("Cmd") or ())
    argv = (*entry_point, *command)
    if not argv:
        raise RuntimeUnavailable(f"the image {function.image_uri} has no ENTRYPOINT or CMD, and ImageConfig sets none")
    env = dict(item.partition("=")[::2] for item in config.get("Env") or () if "=" in item)
    return RuntimeLaunch(
        runtime="image",
        command=argv,
        cwd=override.working_directory or config.get("WorkingDir") or "/var/task",
        uses_bootstrap=False,
        image_env=env,
        handler=command[0] if command else None,
    )
