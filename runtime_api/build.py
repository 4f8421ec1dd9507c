"""`sandbox-runtime build`: requirements.txt installed next to a copy of the code, like `sam build`.

For each `python3.x` function whose code folder has a `requirements.txt`, the build runs
`<interpreter> -m pip install -r requirements.txt --target <tree>` with the interpreter the
function's Runtime resolves to on this host (so compiled wheels match what runs in the sandbox),
then copies the code over it (the code wins over a package of the same name). A layer of the
template whose content folder has a `requirements.txt` is built the same way into `python/` (what
Lambda puts on the path from `/opt`), as `sam build` does for a layer with `BuildMethod: python3.x`,
for the runtime of the first function that uses it. The result lives under the build root:

    <build root>/functions/<FunctionName>/build.json   the manifest: key, tree, source folder, interpreter
    <build root>/functions/<FunctionName>/<key>/        the built tree: what `serve` and `invoke` mount at /var/task
    <build root>/layers/<folder name>-<hash of its path>/...   the same for a layer (merged into /opt)

The key is a digest of the source folder's fingerprint (names, sizes, modes, modification times:
`sandbox.staging.fingerprint`), the bytes of requirements.txt and the interpreter's ABI, so an
unchanged function is not rebuilt and a changed one is out of date until it is. The service never
writes here: it only reads manifests (`code_status`, `layer_status`) and stages the trees they name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sandbox.staging import SKIP_DIRS, fingerprint

from .functions import FunctionSpec
from .runtimes import RuntimeResolver, RuntimeUnavailable

DEFAULT_BUILD_DIR = Path(".sandbox-runtime") / "build"  # next to the template
MANIFEST = "build.json"
REQUIREMENTS = "requirements.txt"
_FORMAT = "1"  # bump when what a build holds changes, so older builds count as out of date


class BuildError(Exception):
    """A build that cannot be made; `output` holds pip's output when pip failed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def default_build_root(template: Path) -> Path:
    return template.absolute().parent / DEFAULT_BUILD_DIR


def build_root(build_dir: Path | None, template: Path | None) -> Path | None:
    """The build root of a configuration: --build-dir / SANDBOX_BUILD_DIR, else next to the template."""
    if build_dir is not None:
        return build_dir.absolute()
    return default_build_root(template) if template is not None else None


def _is_python(function: FunctionSpec) -> bool:
    return function.package_type == "Zip" and function.runtime.startswith("python") and function.code_dir is not None


def needs_build(function: FunctionSpec) -> bool:
    """A Python Zip function with a requirements.txt in its code folder."""
    return _is_python(function) and function.code_dir is not None and (function.code_dir / REQUIREMENTS).is_file()


def layer_needs_build(layer: Path) -> bool:
    return (layer / REQUIREMENTS).is_file()


def inside_code(root: Path, code_dir: Path) -> bool:
    """Whether the build root sits inside a code folder where staging would pick it up (a folder
    staging skips, like `.sandbox-runtime` or `.aws-sam`, does not count)."""
    try:
        relative = root.resolve().relative_to(code_dir.resolve())
    except ValueError:
        return False
    return not any(part in SKIP_DIRS for part in relative.parts)


@dataclass(frozen=True)
class _Unit:
    """Something built: a function's code folder, or a layer's content folder."""

    label: str  # "orders", "layer shared"
    source: Path
    runtime: str
    folder: Path  # <root>/functions/<name> or <root>/layers/<...>
    subdir: str = ""  # where the packages and the source go in the tree: "" or "python"


def _function_unit(root: Path, function: FunctionSpec) -> _Unit:
    assert function.code_dir is not None
    return _Unit(function.name, function.code_dir, function.runtime, root / "functions" / function.name)


def _layer_unit(root: Path, layer: Path, runtime: str) -> _Unit:
    digest = hashlib.sha256(str(layer).encode()).hexdigest()[:8]
    return _Unit(f"layer {layer.name}", layer, runtime, root / "layers" / f"{layer.name}-{digest}", "python")


def manifest_path(root: Path, function: FunctionSpec) -> Path:
    return _function_unit(root, function).folder / MANIFEST


def layer_manifest_path(root: Path, layer: Path) -> Path:
    return _layer_unit(root, layer, "").folder / MANIFEST


# -- the key ------------------------------------------------------------------------------------------

_ABI_CACHE: dict[tuple[str, int], str] = {}
_ABI_LOCK = threading.Lock()
_ABI_PROBE = (
    "import sys, sysconfig; "
    "print(sysconfig.get_config_var('SOABI') or sys.implementation.cache_tag, sysconfig.get_platform())"
)


def interpreter_abi(interpreter: Path) -> str:
    """What compiled wheels must match: e.g. `cpython-311-x86_64-linux-gnu linux-x86_64`. Asked of
    the interpreter once per process (and per change of the binary)."""
    st = interpreter.stat()
    cache_key = (str(interpreter), st.st_mtime_ns)
    with _ABI_LOCK:
        if cache_key in _ABI_CACHE:
            return _ABI_CACHE[cache_key]
    try:
        out = subprocess.run(
            [str(interpreter), "-I", "-c", _ABI_PROBE], capture_output=True, text=True, timeout=30, check=True, env={}
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"cannot run {interpreter}: {exc}") from None
    with _ABI_LOCK:
        _ABI_CACHE[cache_key] = out
    return out


def _key(unit: _Unit, interpreter: Path) -> str:
    """The digest an up-to-date build of `unit` carries. Blocking (walks the source folder)."""
    digest = hashlib.sha256()
    digest.update(f"{_FORMAT}\0{unit.subdir}\0{interpreter_abi(interpreter)}\0".encode())
    digest.update(f"{fingerprint(unit.source)}\0".encode())
    with contextlib.suppress(OSError):
        digest.update((unit.source / REQUIREMENTS).read_bytes())
    return digest.hexdigest()[:24]


def build_key(function: FunctionSpec, root: Path, interpreter: Path) -> str:
    return _key(_function_unit(root, function), interpreter)


# -- what the service serves -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeStatus:
    """What a sandbox gets for a function's code (/var/task) or one of its layers (/opt), and why.

    `state` is one of:
    - `plain`: no requirements.txt (or not a Python Zip function): the folder as it is;
    - `built`: an up-to-date build: its tree;
    - `stale`: a build that no longer matches the code, requirements.txt or interpreter: its
      (old) tree, as `sam local` serves an old `.aws-sam/build` until the next `sam build`;
    - `not_built`: requirements.txt but no build: the folder as it is, without its packages.
    """

    state: str
    source: Path
    key: str | None = None
    build_dir: Path | None = None


def _read_manifest(unit: _Unit) -> dict[str, str] | None:
    try:
        manifest = json.loads((unit.folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("source") != str(unit.source):
        return None  # the build of another folder under the same name (e.g. of another template)
    return manifest


def _status(unit: _Unit, root: Path, interpreter: Path) -> CodeStatus:
    if inside_code(root, unit.source):
        return CodeStatus("plain", unit.source)
    key = _key(unit, interpreter)
    manifest = _read_manifest(unit)
    if manifest is None or not manifest.get("tree") or not (unit.folder / manifest["tree"]).is_dir():
        return CodeStatus("not_built", unit.source, key)
    tree = unit.folder / manifest["tree"]
    return CodeStatus("built" if manifest.get("key") == key else "stale", tree, key, tree)


def code_status(function: FunctionSpec, root: Path | None, interpreter: Path | None) -> CodeStatus:
    """Which folder a function's sandboxes should get at /var/task. Blocking."""
    assert function.code_dir is not None
    if root is None or interpreter is None or not needs_build(function):
        return CodeStatus("plain", function.code_dir)
    return _status(_function_unit(root, function), root, interpreter)


def layer_status(layer: Path, function: FunctionSpec, root: Path | None, interpreter: Path | None) -> CodeStatus:
    """Which folder stands for one of a function's layers in its /opt. Blocking."""
    if root is None or interpreter is None or not _is_python(function) or not layer_needs_build(layer):
        return CodeStatus("plain", layer)
    return _status(_layer_unit(root, layer, function.runtime), root, interpreter)


def built_code_dir(function: FunctionSpec, root: Path | None, interpreter: Path | None) -> Path | None:
    """The up-to-date built folder of a function, or None (nothing to build, not built, or stale)."""
    status = code_status(function, root, interpreter)
    return status.source if status.state == "built" else None


# -- building --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    label: str
    state: str  # "built" | "up_to_date"
    tree: Path
    seconds: float


def build_function(function: FunctionSpec, root: Path, interpreter: Path, *, force: bool = False) -> BuildResult:
    """Install the function's requirements and copy its code into a new tree under `root`, unless an
    up-to-date one is there. Raises BuildError (with pip's output when pip failed)."""
    return _build(_function_unit(root, function), root, interpreter, force=force)


def build_layer(layer: Path, runtime: str, root: Path, interpreter: Path, *, force: bool = False) -> BuildResult:
    return _build(_layer_unit(root, layer, runtime), root, interpreter, force=force)


def _build(unit: _Unit, root: Path, interpreter: Path, *, force: bool) -> BuildResult:
    started = time.monotonic()
    if inside_code(root, unit.source):
        raise BuildError(
            f"the build folder {root} is inside {unit.source}: it would be copied into every build. "
            "Choose a folder outside it (or one named .sandbox-runtime)"
        )
    key = _key(unit, interpreter)
    manifest = _read_manifest(unit)
    if not force and manifest is not None and manifest.get("key") == key and (unit.folder / manifest["tree"]).is_dir():
        return BuildResult(unit.label, "up_to_date", unit.folder / manifest["tree"], time.monotonic() - started)
    unit.folder.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=unit.folder))
    try:
        os.chmod(building, 0o755)
        target = building / unit.subdir if unit.subdir else building
        target.mkdir(exist_ok=True)
        _pip_install(unit, interpreter, target)
        ignore = shutil.ignore_patterns(*SKIP_DIRS)
        shutil.copytree(unit.source, target, symlinks=True, ignore=ignore, dirs_exist_ok=True)
        tree = unit.folder / key
        if tree.exists():
            shutil.rmtree(tree)  # --force, or an earlier build whose manifest was lost
        os.rename(building, tree)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    _write_manifest(unit, interpreter, key, tree)
    for old in unit.folder.iterdir():  # earlier trees: the manifest no longer names them
        if old.is_dir() and old != tree and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    return BuildResult(unit.label, "built", tree, time.monotonic() - started)


def _pip_install(unit: _Unit, interpreter: Path, target: Path) -> None:
    requirements = unit.source / REQUIREMENTS
    install = [
        "install",
        "--requirement",
        str(requirements),
        "--target",
        str(target),
        "--no-compile",  # staging drops __pycache__; the service compiles the staged copy itself
        "--disable-pip-version-check",
        "--no-input",
    ]
    env = {**os.environ, "PIP_ROOT_USER_ACTION": "ignore"}
    # Relative paths in requirements.txt (./vendor/pkg, --find-links wheels) are the source folder's.
    command = [str(interpreter), "-m", "pip", *install]
    done = subprocess.run(command, cwd=unit.source, env=env, capture_output=True, text=True)
    if done.returncode != 0 and "No module named pip" in done.stderr:
        # The interpreter has no pip of its own: ours runs on its behalf (pip >= 22.3).
        command = [sys.executable, "-m", "pip", "--python", str(interpreter), *install]
        done = subprocess.run(command, cwd=unit.source, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        shown = " ".join([*command[: command.index("install")], "install", "-r", str(requirements)])
        raise BuildError(f"pip exited with status {done.returncode} ({shown})", output=done.stdout + done.stderr)


def _write_manifest(unit: _Unit, interpreter: Path, key: str, tree: Path) -> None:
    manifest = {
        "key": key,
        "tree": tree.name,
        "built": unit.label,
        "source": str(unit.source),
        "runtime": unit.runtime,
        "interpreter": str(interpreter),
        "abi": interpreter_abi(interpreter),
        "requirements_sha256": hashlib.sha256((unit.source / REQUIREMENTS).read_bytes()).hexdigest(),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".json", dir=unit.folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, unit.folder / MANIFEST)  # atomic: a reader sees the old build or the new one
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- the command -----------------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run(
    functions: Iterable[FunctionSpec],
    root: Path,
    *,
    template: Path,
    names: Sequence[str] = (),
    parallel: bool = False,
    force: bool = False,
    strict_runtimes: bool = False,
) -> int:
    """Build the selected functions and the layers they use: a line each on stdout, pip's output and
    the error on stderr. 0 when every build is up to date, 2 when one failed, 1 for a name that is
    not in the template."""
    every = list(functions)
    selected = every
    if names:
        by_name = {f.name: f for f in every} | {f.logical_id: f for f in every if f.logical_id}
        missing = [name for name in names if name not in by_name]
        if missing:
            listing = ", ".join(
                sorted(
                    f"{f.name} ({f.logical_id})" if f.logical_id and f.logical_id != f.name else f.name for f in every
                )
            )
            print(
                f"sandbox-runtime: function {missing[0]!r} is not in {_shown(template)} (functions: {listing})",
                file=sys.stderr,
            )
            return 1
        selected = list({by_name[name].name: by_name[name] for name in names}.values())
    functions_todo = [f for f in selected if needs_build(f)]
    layers_todo: dict[Path, FunctionSpec] = {}  # layer -> the first function that uses it
    for function in selected:
        if _is_python(function):
            for layer in function.layers:
                if layer_needs_build(layer):
                    layers_todo.setdefault(layer, function)
        if function not in functions_todo:
            print(f"{function.name}: nothing to build ({_why_not(function)})")
    if not functions_todo and not layers_todo:
        return 0
    resolver = RuntimeResolver(strict=strict_runtimes)
    for function in [*functions_todo, *layers_todo.values()]:
        with contextlib.suppress(RuntimeUnavailable):
            resolver.resolve(function.runtime)  # resolved here, once: the jobs below only read
    for warning in resolver.warnings:
        print(f"sandbox-runtime: warning: {warning}", file=sys.stderr)
    print(f"Building into {_shown(root)}")
    sys.stdout.flush()
    lock = threading.Lock()

    def one(label: str, function: FunctionSpec, layer: Path | None) -> bool:
        try:
            interpreter = resolver.resolve(function.runtime).interpreter
            assert interpreter is not None
            if layer is None:
                result = build_function(function, root, interpreter, force=force)
            else:
                result = build_layer(layer, function.runtime, root, interpreter, force=force)
        except (BuildError, RuntimeUnavailable, OSError) as exc:
            with lock:
                output = getattr(exc, "output", "")
                if output:
                    sys.stderr.write(output if output.endswith("\n") else output + "\n")
                where = "; its output is above" if output else ""
                print(f"sandbox-runtime: build of {label} failed: {exc}{where}", file=sys.stderr)
                sys.stderr.flush()
            return False
        with lock:
            if result.state == "up_to_date":
                print(f"{label}: up to date ({_shown(result.tree)})")
            else:
                print(f"{label}: built in {result.seconds:.1f} s ({_shown(result.tree)}, {interpreter})")
            sys.stdout.flush()
        return True

    jobs: list[tuple[str, FunctionSpec, Path | None]] = [(f.name, f, None) for f in functions_todo]
    jobs += [(f"layer {_shown(layer)} (for {f.runtime})", f, layer) for layer, f in layers_todo.items()]
    if parallel and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 2)) as pool:
            results = list(pool.map(lambda job: one(*job), jobs))
    else:
        results = [one(*job) for job in jobs]
    return 0 if all(results) else 2


def _why_not(function: FunctionSpec) -> str:
    if function.package_type != "Zip":
        return "a container image"
    if not function.runtime.startswith("python"):
        return f"runtime {function.runtime}"
    return "no requirements.txt: its code folder is served as it is"
