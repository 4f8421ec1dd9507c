"""The execution core as one object: functions, their pools, the sandbox backend and the Runtime API.

Used by the HTTP app (`app`) and by the one-shot `sandbox-runtime invoke`. It knows nothing of
Starlette; the routes call `invoke` and render what comes back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sandbox import Backend, CodeStager, SandboxError, SandboxSpec, UidPool, egress, volumes
from sandbox.bwrap import BwrapBackend
from sandbox.cgroups import CgroupError, Cgroups, favor_dynamic_modifications
from sandbox.docker import DockerBackend, DockerUnavailable
from sandbox.egress import EgressPolicy
from sandbox.slots import Slots
from sandbox.spec import Preload

from . import build
from .capacity import Capacity
from .config import Settings
from .environment import Environment
from .errors import InvalidRuntimeException, ResourceConflictException, TooManyRequestsException
from .extensions import extensions_disabled, external_extensions, launcher_command
from .functions import LATEST, FunctionRegistry, FunctionSpec
from .invocation import Invocation, InvocationResult
from .lambda_env import function_environment, reserved_variables, startup_environment
from .logs import get_logger
from .metrics import Metrics
from .output import LogSink
from .pool import FunctionPool
from .recent import Recent
from .reload import HotReloader, start_hot_reload
from .runtime import RuntimeAPIServer
from .runtimes import (
    RuntimeLaunch,
    RuntimeResolver,
    RuntimeUnavailable,
    compile_python_tree,
    image_launch,
    provision_runtime_dir,
    reachable_by_sandboxes,
)
from .session import session_launcher
from .sessions import SessionManager

log = get_logger("service")
function_log = get_logger("function")


_STATE_PREFIX = "sandbox-runtime-"
_MB_PER_VCPU = 1769  # Lambda: a function with 1,769 MB has the equivalent of one vCPU


def _remove_stale_state_dirs() -> None:
    """Remove the temporary state folders of services that died without cleaning up (SIGKILL)."""
    for path in Path(tempfile.gettempdir()).glob(f"{_STATE_PREFIX}*-*"):
        pid = path.name.removeprefix(_STATE_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or not path.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            volumes.unmount_under(path)  # its sessions' workspaces
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def _raise_open_files_limit() -> None:
    """Each environment holds a few descriptors (listener, output pipe, pidfds, its connection): lift
    the soft limit (often 1024) to the hard one so hundreds of environments fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class StartupError(Exception):
    """The service cannot run on this machine as configured; the message says what to do."""


def preflight(*, bwrap: bool = True) -> None:
    if os.geteuid() != 0:
        # Each sandbox runs as its own unprivileged uid, and the service opens the sandbox's
        # Runtime API listener inside the sandbox's network namespace: both need root.
        raise StartupError(
            "must run as root (it switches every sandbox to its own unprivileged uid); "
            "run it with sudo or in the container image"
        )
    if bwrap and shutil.which("bwrap") is None:
        raise StartupError("bubblewrap is not installed: run scripts/install, or apt-get install bubblewrap")


def structlog_sink(function: FunctionSpec, request_id: str | None, line: str) -> None:
    function_log.info(line, function=function.name, request_id=request_id)


def _heard(sink: LogSink) -> LogSink | None:
    """The sink, or None when every line would be dropped (the service log's level is above info):
    START, END and REPORT are then not handed over on every invoke."""
    if sink is structlog_sink and not function_log.bind().is_enabled_for(logging.INFO):
        return None
    return sink


class Service:
    def __init__(self, settings: Settings, registry: FunctionRegistry, *, log_sink: LogSink = structlog_sink) -> None:
        self.settings = settings
        self.registry = registry
        self.log_sink = log_sink
        self.resolver = RuntimeResolver(strict=settings.strict_runtimes)
        self.pools: dict[str, FunctionPool] = {}
        prestarts = settings.prestart_concurrency or 2 * len(os.sched_getaffinity(0))
        self.capacity = Capacity(settings.max_environments, prestarts=prestarts)
        self.unavailable: dict[str, str] = {}  # FunctionSpec.key -> why it cannot run
        self.pending: dict[str, str] = {}  # FunctionSpec.key -> its state while the control plane prepares it
        self._launches: dict[str, RuntimeLaunch] = {}
        self._code: dict[str, Path] = {}
        self._opt: dict[str, Path] = {}  # FunctionSpec.key -> its layers merged (the sandbox's /opt)
        self._extensions: dict[Path | None, tuple[tuple[str, ...], bool]] = {}  # /opt -> its extensions, enabled
        self._state_dir: Path | None = None
        self._owns_state_dir = False
        # One uid pool for every backend: a uid is never in use by two sandboxes at once.
        first, last = settings.uid_range
        self._uids = UidPool(first, last - first + 1)
        self._backends: dict[str, Backend] = {}
        self._docker: DockerBackend | None = None
        self.docker_problem: str | None = None  # why Docker, wanted by a function, cannot be reached
        self._runtime_api: RuntimeAPIServer | None = None
        self._runtime_dir: Path | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._stager: CodeStager | None = None
        self._warm_up = True
        self._interpreters: set[Path] = set()
        self._compiled: set[Path] = set()
        self._cgroups: Cgroups | None = None
        self._egress_policy = EgressPolicy()
        self.limits_problem: str | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Template functions (by name, their CodeUri): served from their build when they have one
        # (`build.py`), and hot-reloaded by `serve` (`reload.py`).
        self._template_code = {f.name: f.code_dir for f in registry if f.code_dir is not None}
        self.build_root = build.build_root(settings.build_dir, settings.template)
        self._build_warned: dict[tuple[str, Path | None], tuple[str, str | None]] = {}
        self.reloader: HotReloader | None = None
        self.sessions = SessionManager(settings)  # agent sessions (`sessions.py`), served from `start`
        self.metrics = Metrics(self)  # GET /metrics (`metrics.py`)
        self.recent = Recent(settings.status_invocations, settings.status_log_lines)  # the status page's
        self.sessions.observer = self.metrics
        self._session_launch: RuntimeLaunch | None = None
        self._session_problem: str | None = None
        self._slots: Slots | None = None  # pre-started generic sandboxes' mount points
        self._generic_wants: dict[str, SandboxSpec] = {}  # FunctionSpec.key -> the spec its key came from
        self.generic_problem: str | None = None  # why there are no generic sandboxes, when there are none

    # -- start and stop -------------------------------------------------------------------------

    async def start(self, *, warm_up: bool = True) -> None:
        """Prepare every function. `warm_up` (for a long-lived service) pre-starts environments and
        byte-compiles staged code in the background; a one-shot invoke skips both."""
        self._state_dir = self._make_state_dir()
        self._stager = CodeStager(self._state_dir / "code")
        self._warm_up = warm_up
        self.preflight()
        _raise_open_files_limit()
        await asyncio.to_thread(self.prepare)
        if shutil.which("bwrap") is not None:
            if self._uses("bwrap"):
                self._cgroups = self._detect_cgroups()
            self._backends["bwrap"] = BwrapBackend(uid_pool=self._uids, cgroups=self._cgroups)
            if warm_up and self.settings.generic_pool_size > 0 and self._uses("bwrap"):
                await asyncio.to_thread(self._keep_generic_sandboxes, asyncio.get_running_loop())
        if self._docker is not None:
            self._backends["docker"] = self._docker
        self._runtime_api = RuntimeAPIServer()
        if warm_up and self.settings.hot_reload:  # watching first: a change while staging is not missed
            template = [f for f in self.registry if self._template_code.get(f.name) == f.code_dir]
            self.reloader = await asyncio.to_thread(start_hot_reload, self, template)
        for function in self.registry.all_specs():
            # Functions added after `prepare` (the control plane's stored ones) are resolved here.
            if function.key not in self._launches and function.key not in self.unavailable:
                await asyncio.to_thread(self._resolve, function)
            if function.key in self._launches:
                await self._stage(function)
        for function in self.registry.all_specs():
            if function.key in self._launches:
                self._open_pool(function)
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())
        await self._start_sessions(warm_up)
        log.info(
            "service.ready",
            functions=len(self.pools),
            unavailable=len(self.unavailable),
            state_dir=str(self._state_dir),
        )

    def _keep_generic_sandboxes(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._state_dir is not None
        self._slots, self.generic_problem = Slots.open(self._state_dir / "slots")
        if self._slots is None:
            log.warning("generic_sandboxes.unavailable", reason=self.generic_problem,
                        effect="every cold start starts its sandbox and interpreter from nothing")  # fmt: skip
            return
        backend = self._backends["bwrap"]
        assert isinstance(backend, BwrapBackend)
        backend.keep_generic(self._slots, self.settings.generic_pool_size, loop)

    def _want_generic(self, function: FunctionSpec | None, key: str) -> None:
        """Keep generic sandboxes ready for `function` (None: no longer for what `key` served)."""
        backend = self._backends.get("bwrap")
        if not isinstance(backend, BwrapBackend) or backend.generic is None:
            return
        if (old := self._generic_wants.pop(key, None)) is not None:
            backend.generic.unwant(old)
        if function is not None and self.isolation_of(function) == "bwrap":
            spec = self._generic_wants[key] = self._sandbox_spec(function)
            backend.generic.want(spec)

    def _detect_cgroups(self) -> Cgroups | None:
        try:
            cgroups = Cgroups.detect()
        except CgroupError as exc:
            self.limits_problem = str(exc)
            log.warning(
                "sandbox.no_cgroups",
                detail=f"SANDBOXES RUN WITHOUT MEMORY, PROCESS AND CPU LIMITS: {exc}. Only rlimit backstops apply.",
            )
            return None
        if self.settings.cgroup_favordynmods:
            try:
                if remounted := favor_dynamic_modifications():
                    log.info("sandbox.cgroup_favordynmods", mount=remounted)
            except CgroupError as exc:  # a speed-up only: the limits themselves still apply
                log.warning("sandbox.cgroup_favordynmods_failed", detail=str(exc))
        return cgroups

    async def _stage(self, function: FunctionSpec) -> None:
        """A read-only copy of the function's code folder for its sandboxes (`staging`), and the
        warnings a user should see about it."""
        launch = self._launches[function.key]
        assert self._stager is not None
        if function.code_dir is not None:
            self._code[function.key] = await asyncio.to_thread(self._stage_code, function)
        if function.layers:
            self._opt[function.key] = await asyncio.to_thread(self._stage_layers, function)
        else:
            self._opt.pop(function.key, None)
        if function.version != LATEST:
            return
        if ignored := reserved_variables(function):
            log.warning(
                "function.reserved_variables",
                function=function.name,
                variables=ignored,
                detail="Lambda reserves these names: their values are ignored",
            )
        code = self._code.get(function.key)
        if code is not None and not launch.uses_bootstrap and not os.access(code / "bootstrap", os.X_OK):
            log.warning(
                "function.no_bootstrap",
                function=function.name,
                detail=f"{function.runtime} runs the executable 'bootstrap' in CodeUri, which is missing",
            )

    def _stage_code(self, function: FunctionSpec) -> Path:
        """Stage what /var/task is made of: the code folder, or the function's build. Blocking."""
        assert self._stager is not None and function.code_dir is not None
        return self._stager.stage(self._code_source(function), name=function.code_dir.name)

    def _stage_layers(self, function: FunctionSpec) -> Path:
        """Stage what /opt is made of: the layers' folders, or their builds, merged. Blocking."""
        assert self._stager is not None
        return self._stager.stage_merged(self._layer_sources(function))

    def _code_source(self, function: FunctionSpec) -> Path:
        """The function's code folder, or for a template function with a requirements.txt, its build
        (`build.code_status`), with a warning when it has none or an out-of-date one. Blocking."""
        assert function.code_dir is not None
        if self._template_code.get(function.name) != function.code_dir:
            return function.code_dir  # the control plane's code: packages come in the zip
        status = build.code_status(function, self.build_root, self._interpreter(function))
        return self._built_source(function, status, None)

    def _layer_sources(self, function: FunctionSpec) -> list[Path]:
        """The function's layer folders, each replaced by its build when it has a requirements.txt."""
        if self._template_code.get(function.name) != function.code_dir:
            return list(function.layers)
        interpreter = self._interpreter(function)
        return [
            self._built_source(function, build.layer_status(layer, function, self.build_root, interpreter), layer)
            for layer in function.layers
        ]

    def _interpreter(self, function: FunctionSpec) -> Path | None:
        launch = self._launches.get(function.key)
        return launch.interpreter if launch is not None else None

    def _built_source(self, function: FunctionSpec, status: build.CodeStatus, layer: Path | None) -> Path:
        warned = (status.state, status.key)
        if (
            function.version == LATEST
            and status.state in ("stale", "not_built")
            and self._build_warned.get((function.name, layer)) != warned
        ):
            self._build_warned[(function.name, layer)] = warned  # once per state of the code, not per reload
            self._warn_not_built(function, status, layer)
        return status.source

    def _warn_not_built(self, function: FunctionSpec, status: build.CodeStatus, layer: Path | None) -> None:
        command = f"sandbox-runtime build {function.name} --template {self.settings.template}"
        if self.settings.build_dir is not None:
            command += f" --build-dir {self.settings.build_dir}"
        what = "its code" if layer is None else f"its layer {layer}"
        if status.state == "stale":
            detail = (
                f"the build of {what} is out of date (the code, requirements.txt or interpreter changed since): "
                f"the last build is served until you run: {command}"
            )
        else:
            detail = (
                f"{what} has a requirements.txt but no build: it is served without those packages "
                f"until you run: {command}"
            )
        log.warning(
            "function.not_built",
            function=function.name,
            layer=None if layer is None else str(layer),
            state=status.state,
            build=str(status.build_dir or self.build_root),
            detail=detail,
        )

    def code_changed(self, function: FunctionSpec) -> bool:
        """Whether staging the function now gives other folders than those it is served from (staging
        them meanwhile). Blocking; raises OSError when its folders cannot be read."""
        if function.code_dir is not None and self._stage_code(function) != self._code.get(function.key):
            return True
        return bool(function.layers) and self._stage_layers(function) != self._opt.get(function.key)

    async def set_template_functions(self, functions: list[FunctionSpec]) -> None:
        """The template's functions changed (`template_reload`): build sources and hot reload follow them."""
        self._template_code = {f.name: f.code_dir for f in functions if f.code_dir is not None}
        if self.reloader is not None:
            reloader = await asyncio.to_thread(start_hot_reload, self, functions)
            if reloader is not None:
                self.reloader.hand_over(reloader)  # code edits not reloaded yet are not forgotten
            else:
                self.reloader.close()
            self.reloader = reloader

    def staged_code(self, function: FunctionSpec) -> Path | None:
        return self._code.get(function.key)

    def _open_pool(self, function: FunctionSpec) -> None:
        """Serve the function version from a new pool; a pool it replaces drains in the background."""
        old = self.pools.get(function.key)
        pool = self.pools[function.key] = self._make_pool(function)
        if old is not None:
            self._in_background(old.retire())
        if not self._warm_up:
            return
        self._want_generic(function, function.key)
        pool.prestart()
        # The sandbox cannot write __pycache__ into /var/task: compile once here instead of at every
        # cold start (atomic writes, so sandboxes starting meanwhile are unaffected).
        launch = self._launches[function.key]
        for code in (self._code.get(function.key), self._opt.get(function.key)):
            if launch.interpreter is not None and code is not None and code not in self._compiled:
                self._compiled.add(code)
                self._in_background(asyncio.to_thread(compile_python_tree, launch.interpreter, code))

    def _in_background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- functions that come and go (the control plane) ----------------------------------------

    async def deploy(self, function: FunctionSpec) -> str | None:
        """Make a function version runnable, replacing what served the same version before (which
        drains in the background). None when it can run, else why not (it stays unavailable)."""
        key = function.key
        self.unavailable.pop(key, None)
        self._launches.pop(key, None)
        await asyncio.to_thread(self._resolve, function)
        if key in self._launches:
            try:
                await self._stage(function)
            except OSError as exc:
                self._launches.pop(key, None)
                self.unavailable[key] = f"cannot stage the code: {exc}"
        if key in self._launches and self.isolation_of(function) not in self._backends:
            self._launches.pop(key, None)
            self.unavailable[key] = f"the {self.isolation_of(function)} isolation is not available here"
        if key in self._launches:
            self._open_pool(function)
        else:
            self._want_generic(None, key)
            if (old := self.pools.pop(key, None)) is not None:
                self._in_background(old.retire())
        return self.unavailable.get(key)

    def undeploy(self, function: FunctionSpec) -> None:
        """Stop serving a function version; invocations already running finish first (in the
        background)."""
        self.unavailable.pop(function.key, None)
        self._want_generic(None, function.key)
        self._launches.pop(function.key, None)
        self._code.pop(function.key, None)
        self._opt.pop(function.key, None)
        pool = self.pools.pop(function.key, None)
        if pool is not None:
            self._in_background(pool.retire())

    def _resolve(self, function: FunctionSpec) -> None:
        """How one function runs (its RuntimeLaunch), or why it cannot (in `unavailable`). Blocking."""
        key = function.key
        try:
            if self.isolation_of(function) == "docker":
                docker = self._docker_backend()
                if function.package_type == "Image":
                    self._launches[key] = image_launch(function, docker.image(function.image_uri or ""))
                    return
            launch = self.resolver.resolve(function.runtime)
        except (SandboxError, RuntimeUnavailable) as exc:
            self.unavailable[key] = str(exc)
            log.warning("function.unavailable", function=key, reason=str(exc))
            return
        if launch.interpreter is not None and launch.interpreter not in self._interpreters:
            # A Python version no function used before: /var/runtime is rebuilt to include it.
            self._interpreters.add(launch.interpreter)
            self._runtime_dir = provision_runtime_dir(self.settings.cache_dir.absolute(), sorted(self._interpreters))
        self._launches[key] = launch

    def _docker_backend(self) -> DockerBackend:
        """The Docker backend, connected on first use (raises DockerUnavailable, a SandboxError)."""
        if self._docker is None:
            docker = DockerBackend(uid_pool=self._uids, docker_host=self.settings.docker_host)
            try:
                docker.connect()
            except DockerUnavailable as exc:
                docker.close()
                self.docker_problem = str(exc)
                raise
            self._docker = docker
            self.docker_problem = None
            self._backends.setdefault("docker", docker)
        return self._docker

    def isolation_of(self, function: FunctionSpec) -> str:
        if function.package_type == "Image":
            return "docker"
        return function.isolation or self.settings.isolation

    def _uses(self, isolation: str) -> bool:
        return self.settings.isolation == isolation or any(
            self.isolation_of(f) == isolation and f.key in self._launches for f in self.registry.all_specs()
        )

    def preflight(self) -> None:
        preflight(bwrap=any(self.isolation_of(f) == "bwrap" for f in self.registry))

    def prepare(self) -> None:
        """What can fail for reasons the user must fix, done before anything is served (so it is a
        one-line StartupError, not a failed start-up): how each function runs (--strict-runtimes
        refusals), the Docker engine and images, and /var/runtime in the cache folder."""
        if self._runtime_dir is not None:
            return
        self._resolve_runtimes()
        self._connect_docker()
        cache = self.settings.cache_dir.absolute()
        if not reachable_by_sandboxes(cache.parent):
            raise StartupError(
                f"SANDBOX_CACHE_DIR={cache} must be searchable by every user (each folder above it needs o+x): "
                "sandboxes read /var/runtime from it"
            )
        try:
            self._interpreters = set(self.resolver.interpreters())
            self._runtime_dir = provision_runtime_dir(cache, sorted(self._interpreters))
        except OSError as exc:
            raise StartupError(f"cannot prepare the runtime folder in SANDBOX_CACHE_DIR={cache}: {exc}") from None

    def _connect_docker(self) -> None:
        """Reach Docker if anything runs on it; inspect each image function's image for its command."""
        wanted = [
            f for f in self.registry.all_specs() if self.isolation_of(f) == "docker" and f.key not in self.unavailable
        ]
        if self.settings.isolation != "docker" and not wanted:
            return
        docker = DockerBackend(uid_pool=self._uids, docker_host=self.settings.docker_host)
        try:
            docker.connect()
        except DockerUnavailable as exc:
            docker.close()
            if self.settings.isolation == "docker":
                raise StartupError(str(exc)) from None
            self.docker_problem = str(exc)
            for function in wanted:
                self._launches.pop(function.key, None)
                self.unavailable[function.key] = str(exc)
            log.warning("sandbox.docker_unavailable", functions=[f.key for f in wanted], detail=str(exc))
            return
        self._docker = docker
        for function in wanted:
            if function.package_type != "Image":
                continue
            try:
                self._launches[function.key] = image_launch(function, docker.image(function.image_uri or ""))
            except (SandboxError, RuntimeUnavailable) as exc:
                self.unavailable[function.key] = str(exc)
                log.warning("function.unavailable", function=function.key, reason=str(exc))

    async def _start_sessions(self, warm_up: bool) -> None:
        """Agent sessions run on the service's backend (its uid pool, cgroups, seccomp, egress proxy)
        and the host's python3, resolved with the functions' runtimes in `prepare`."""
        backend = self._backends.get(self.settings.isolation)
        if backend is None or self._session_launch is None:
            problem = self._session_problem or f"the {self.settings.isolation} isolation is not available"
            await self.sessions.start(None, problem=problem)
            return
        assert self._state_dir is not None and self._runtime_dir is not None
        try:
            launcher = await asyncio.to_thread(
                session_launcher,
                self.settings,
                backend=backend,
                launch=self._session_launch,
                runtime_dir=self._runtime_dir,
                state_dir=self._state_dir,
                serve_egress=self._serve_egress,
            )
        except OSError as exc:  # functions are served regardless
            await self.sessions.start(None, problem=f"cannot prepare the sessions folder: {exc}")
            return
        await self.sessions.start(launcher, warm_up=warm_up)

    def _resolve_runtimes(self) -> None:
        try:
            self._session_launch = self.resolver.default_python()
        except RuntimeUnavailable as exc:
            self._session_problem = str(exc)
        for function in self.registry.all_specs():
            if function.package_type == "Image":
                continue
            try:
                self._launches[function.key] = self.resolver.resolve(function.runtime)
            except RuntimeUnavailable as exc:
                if self.settings.strict_runtimes and function.runtime.startswith("python"):
                    raise StartupError(f"function {function.name}: {exc}") from None
                self.unavailable[function.key] = str(exc)
                log.warning("function.unavailable", function=function.key, reason=str(exc))
        for warning in self.resolver.warnings:
            log.warning("runtime.fallback", detail=warning)

    async def stop_invocations(self, cause: str) -> None:
        """Stop every sandbox now (the shutdown deadline): invocations still running end with a
        Runtime.ExitError that says `cause`, so their callers get an answer; new ones are refused.
        Agent sessions end too, so a command still running there is answered as well."""
        await asyncio.gather(*(pool.close(cause) for pool in list(self.capacity.pools)), self.sessions.shutdown())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        if self.reloader is not None:
            self.reloader.close()
        # Every pool, including those of replaced or deleted versions still draining.
        await asyncio.gather(*(pool.close() for pool in list(self.capacity.pools)))
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.sessions.shutdown()
        for backend in self._backends.values():
            await asyncio.to_thread(backend.close)
        if self._slots is not None:
            await asyncio.to_thread(self._slots.close)
        if self._cgroups is not None:
            self._cgroups.close()
        if self._owns_state_dir and self._state_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._state_dir, True)

    def _make_state_dir(self) -> Path:
        if self.settings.state_dir is not None:
            path = self.settings.state_dir
            path.mkdir(parents=True, exist_ok=True)
        else:
            _remove_stale_state_dirs()
            path = Path(tempfile.mkdtemp(prefix=f"{_STATE_PREFIX}{os.getpid()}-"))
            self._owns_state_dir = True
        # Sandbox uids must be able to traverse it to reach the staged code (never to list it).
        os.chmod(path, 0o711)
        return path

    async def _reap_forever(self) -> None:
        interval = max(1.0, min(30.0, self.settings.keep_alive_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            for pool in self.pools.values():
                pool.reap_idle()

    # -- pools and environments -----------------------------------------------------------------

    def _make_pool(self, function: FunctionSpec) -> FunctionPool:
        return FunctionPool(
            function,
            self._new_environment,
            capacity=self.capacity,
            max_concurrency=self.settings.max_concurrency,
            queue_timeout=self.settings.queue_timeout_seconds,
            pool_size=self.settings.pool_size,
            keep_alive=self.settings.keep_alive_seconds,
            observer=self.metrics,
        )

    def _new_environment(self, pool: FunctionPool) -> Environment:
        function = pool.function
        spec = self._sandbox_spec(function)
        extensions, extensions_enabled = self._extensions[spec.opt_dir]
        assert self._runtime_api is not None
        return Environment(
            function,
            spec,
            backend=self._backends[self.isolation_of(function)],
            hooks=pool,
            serve_runtime_api=self._runtime_api.serve,
            serve_egress=self._serve_egress,
            log_sink=self.recent.sink(_heard(self.log_sink)),
            init_limit=self.settings.init_timeout_seconds,
            log_limit=self.settings.log_limit_bytes,
            extensions=extensions,
            extensions_enabled=extensions_enabled,
        )

    def _sandbox_spec(self, function: FunctionSpec) -> SandboxSpec:
        """What one new environment of the function runs in."""
        launch = self._launches[function.key]
        network = self.allows_network(function)
        region = self.settings.region
        env = function_environment(function, launch, region=region, network=network, base=launch.image_env)
        opt = self._opt.get(function.key)
        if opt not in self._extensions:  # staged /opt folders never change: listed once each
            self._extensions[opt] = (external_extensions(opt), not extensions_disabled(opt))
        extensions = self._extensions[opt][0]
        # Extensions start beside the runtime, from the launcher: only a plain runtime can be pre-started.
        preload = Preload(launch.preload, startup_environment(env)) if launch.preload and not extensions else None
        return SandboxSpec(
            # With external extensions, a launcher starts them and then the runtime (`extensions`).
            command=launcher_command(extensions, launch.command, env) if extensions else launch.command,
            env=env,
            extension_output=bool(extensions),
            allow_network=network,
            image=function.image_uri if function.package_type == "Image" else None,
            code_dir=self._code.get(function.key),
            opt_dir=opt,
            runtime_dir=self._runtime_dir if launch.uses_bootstrap else None,
            extra_ro_binds=launch.extra_ro_binds,
            cwd=launch.cwd,
            tmp_size_mb=function.ephemeral_storage,
            memory_mb=function.memory_size,
            cpu_cores=self.settings.cpu_quota or max(0.05, function.memory_size / _MB_PER_VCPU),
            label=function.name,
            preload=preload,
        )

    def set_reserved(self, function: FunctionSpec) -> None:
        """Apply a new reserved concurrency to the version's pool in place (no environment restarts)."""
        pool = self.pools.get(function.key)
        if pool is not None:
            pool.function = function
            pool.set_limit(function.reserved_concurrency, self.settings.max_concurrency)

    def allows_network(self, function: FunctionSpec) -> bool:
        return self.settings.allow_network if function.allow_network is None else function.allow_network

    async def _serve_egress(self, listener: Any) -> Any:
        return await egress.serve(listener, self._egress_policy)

    def pool_for(self, function: FunctionSpec) -> FunctionPool:
        if (state := self.pending.get(function.key)) is not None:
            raise ResourceConflictException(
                "The operation cannot be performed at this time. "
                f"The function is currently in the following state: {state}"
            )
        pool = self.pools.get(function.key)
        if pool is None:
            reason = self.unavailable.get(function.key, "it cannot run here")
            raise InvalidRuntimeException(f"The function {function.name} cannot be invoked: {reason}")
        return pool

    async def invoke(self, invocation: Invocation) -> InvocationResult:
        if self.reloader is not None and (reloading := self.reloader.check(invocation.function)) is not None:
            self.metrics.in_flight += 1  # accepted, waiting for the reload
            try:
                await reloading  # its code changed: the new code serves this invocation
            finally:
                self.metrics.in_flight -= 1
        self._dispatch(invocation)
        return await invocation.future

    def begin_invoke(self, invocation: Invocation) -> bool:
        """`invoke` without waiting: hand the invocation to its pool now; its future has the result.
        False (nothing done) while its function's code is being reloaded: `invoke` waits for that.
        A refusal (throttled, not runnable, shutting down) raises, as from `invoke`."""
        if self.reloader is not None and self.reloader.stale(invocation.function):
            return False
        self._dispatch(invocation)
        return True

    def _dispatch(self, invocation: Invocation) -> None:
        pool = self.pool_for(invocation.function)  # a function that cannot run raises here, uncounted
        try:
            pool.dispatch(invocation)
        except Exception as exc:
            self._refused(invocation, exc)
            raise
        self.metrics.in_flight += 1
        invocation.future.add_done_callback(lambda future: self._ended(invocation, future))

    def _ended(self, invocation: Invocation, future: asyncio.Future[InvocationResult]) -> None:
        self.metrics.in_flight -= 1
        if future.cancelled():
            return
        if (exc := future.exception()) is not None:  # refused after all: its queue wait ran out, ...
            self._refused(invocation, exc)
            return
        # Counted here, before the loop reads anything more, so that an invocation is recorded before
        # whatever its caller sends once it has the answer (the status page lists them in that order).
        # On the warm path the answer is out already: the service's HTTP protocol wrote it when the
        # result was set; a task awaiting the future (the ASGI route) is woken right after this.
        self._counted(invocation, future.result())

    def _refused(self, invocation: Invocation, exc: BaseException) -> None:
        outcome = "throttled" if isinstance(exc, TooManyRequestsException) else "service_error"
        self.metrics.refused(invocation.function.name, outcome)
        self.recent.refused(invocation, exc, outcome)

    def _counted(self, invocation: Invocation, result: InvocationResult) -> None:
        self.metrics.invoked(invocation.function.name, result)
        self.recent.invoked(invocation, result)

    def describe(self) -> dict[str, Any]:
        backends = self.describe_backends()
        return {
            "environments": {"live": self.capacity.live, "limit": self.capacity.limit},
            "limits": backends["limits"],
            "functions": {name: pool.describe() for name, pool in self.pools.items()},
            "unavailable": dict(self.unavailable),
            "backend": backends["backends"].get(self.settings.isolation),
            "backends": backends["backends"],
            "generic_sandboxes": backends["generic_sandboxes"],
        }

    def describe_backends(self) -> dict[str, Any]:
        """The sandbox backends (each with `available` and, when it is not, `detail`: why), the cgroup
        limits and the generic sandboxes: /health's and /metrics' view of them."""
        backends = {name: backend.status().__dict__ for name, backend in self._backends.items()}
        if self.docker_problem is not None and "docker" not in backends:
            backends["docker"] = {"name": "docker", "available": False, "detail": self.docker_problem, "extra": {}}
        return {
            "backends": backends,
            "limits": {"cgroups": self._cgroups is not None, "problem": self.limits_problem},
            "generic_sandboxes": self._generic_status(),
        }

    def _generic_status(self) -> dict[str, Any]:
        backend = self._backends.get("bwrap")
        if isinstance(backend, BwrapBackend) and backend.generic is not None:
            return {"enabled": True, **backend.generic.status()}
        return {"enabled": False, "problem": self.generic_problem}
