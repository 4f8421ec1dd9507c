"""Lambda runtime names → what to run inside the sandbox.

`python3.x` runs our stdlib bootstrap (/var/runtime/sandbox_bootstrap) on the host's `python3.x`,
or, when that interpreter is missing, on the host's `python3` with one warning (refused with
--strict-runtimes). `provided`, `provided.al2` and `provided.al2023` run the function's own
executable /var/task/bootstrap. The interpreter must be reachable by the unprivileged sandbox uid:
anything under /usr is (it is bound read-only); an installation elsewhere has its prefix bound
read-only when every folder above it is world-searchable.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BOOTSTRAP_PACKAGE = "sandbox_bootstrap"
_BOOTSTRAP_SOURCE = Path(__file__).resolve().parent.parent / "bootstrap"
# Launch line for our bootstrap: independent of PYTHONPATH/PYTHONSAFEPATH a function may set.
_LAUNCH = f"import sys; sys.path.insert(0, '/var/runtime'); from {BOOTSTRAP_PACKAGE}.main import main; main()"
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


def stage_bootstrap(runtime_dir: Path, interpreters: Iterable[Path]) -> Path:
    """Lay out /var/runtime in `runtime_dir` (made anew): our bootstrap package, world-readable and
    byte-compiled for each interpreter, since the sandbox cannot write __pycache__ itself."""
    if runtime_dir.exists():
        shutil.rmtree(runtime_dir)
    runtime_dir.mkdir(mode=0o755)
    os.chmod(runtime_dir, 0o755)
    package = runtime_dir / BOOTSTRAP_PACKAGE
    shutil.copytree(_BOOTSTRAP_SOURCE, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for interpreter in interpreters:
        subprocess.run(
            [str(interpreter), "-m", "compileall", "-q", str(package)], check=False, env={}, capture_output=True
        )
    for root, dirs, files in os.walk(runtime_dir):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    return runtime_dir
