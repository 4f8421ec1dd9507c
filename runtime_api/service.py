"""The execution core as one object: functions, their pools, the sandbox backend and the Runtime API.

Used by the HTTP app (`app`) and by the one-shot `sandbox-runtime invoke`. It knows nothing of
Starlette; the routes call `invoke` and render what comes back.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sandbox import Backend, CodeStager, SandboxError, SandboxSpec, UidPool, egress
from sandbox.bwrap import BwrapBackend
from sandbox.cgroups import CgroupError, Cgroups, favor_dynamic_modifications
from sandbox.docker import DockerBackend, DockerUnavailable
from sandbox.egress import EgressPolicy

from .capacity import Capacity
from .config import Settings
from .environment import Environment
from .errors import InvalidRuntimeException, ResourceConflictException
from .functions import LATEST, FunctionRegistry, FunctionSpec
from .invocation import Invocation, InvocationResult
from .lambda_env import function_environment, reserved_variables
from .logs import get_logger
from .output import LogSink
from .pool import FunctionPool
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


class Service:
    def __init__(self, settings: Settings, registry: FunctionRegistry, *, log_sink: LogSink = structlog_sink) -> None:
        self.settings = settings
        self.registry = registry
        self.log_sink = log_sink
        self.resolver = RuntimeResolver(strict=settings.strict_runtimes)
        self.pools: dict[str, FunctionPool] = {}
        self.capacity = Capacity(settings.max_environments)
        self.unavailable: dict[str, str] = {}  # FunctionSpec.key -> why it cannot run
        self.pending: dict[str, str] = {}  # FunctionSpec.key -> its state while the control plane prepares it
        self._launches: dict[str, RuntimeLaunch] = {}
        self._code: dict[str, Path] = {}
        self._state_dir: Path | None = None
        self._owns_state_dir = False
        # One uid pool for every backend: a uid is never in use by two sandboxes at once.
        first, last = settings.uid_range
        self._uids = UidPool(first, last - first + 1)
        self._backends: dict[str, Backend] = {}
        self._docker: DockerBackend | None = None
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
        if self._docker is not None:
            self._backends["docker"] = self._docker
        self._runtime_api = RuntimeAPIServer()
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
        log.info(
            "service.ready",
            functions=len(self.pools),
            unavailable=len(self.unavailable),
            state_dir=str(self._state_dir),
        )

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
            self._code[function.key] = await asyncio.to_thread(
                self._stager.stage, function.code_dir, name=function.code_dir.name
            )
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

    def _open_pool(self, function: FunctionSpec) -> None:
        """Serve the function version from a new pool; a pool it replaces drains in the background."""
        old = self.pools.get(function.key)
        pool = self.pools[function.key] = self._make_pool(function)
        if old is not None:
            self._in_background(old.retire())
        if not self._warm_up:
            return
        pool.prestart()
        # The sandbox cannot write __pycache__ into /var/task: compile once here instead of at every
        # cold start (atomic writes, so sandboxes starting meanwhile are unaffected).
        launch, code = self._launches[function.key], self._code.get(function.key)
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
        elif (old := self.pools.pop(key, None)) is not None:
            self._in_background(old.retire())
        return self.unavailable.get(key)

    def undeploy(self, function: FunctionSpec) -> None:
        """Stop serving a function version; invocations already running finish first (in the
        background)."""
        self.unavailable.pop(function.key, None)
        self._launches.pop(function.key, None)
        self._code.pop(function.key, None)
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
            except DockerUnavailable:
                docker.close()
                raise
            self._docker = docker
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

    def _resolve_runtimes(self) -> None:
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

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        # Every pool, including those of replaced or deleted versions still draining.
        await asyncio.gather(*(pool.close() for pool in list(self.capacity.pools)))
        await asyncio.gather(*self._background, return_exceptions=True)
        for backend in self._backends.values():
            await asyncio.to_thread(backend.close)
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
        )

    def _new_environment(self, pool: FunctionPool) -> Environment:
        function = pool.function
        launch = self._launches[function.key]
        network = self.allows_network(function)
        spec = SandboxSpec(
            command=launch.command,
            env=function_environment(
                function, launch, region=self.settings.region, network=network, base=launch.image_env
            ),
            allow_network=network,
            image=function.image_uri if function.package_type == "Image" else None,
            code_dir=self._code.get(function.key),
            runtime_dir=self._runtime_dir if launch.uses_bootstrap else None,
            extra_ro_binds=launch.extra_ro_binds,
            cwd=launch.cwd,
            tmp_size_mb=function.ephemeral_storage,
            memory_mb=function.memory_size,
            cpu_cores=self.settings.cpu_quota or max(0.05, function.memory_size / _MB_PER_VCPU),
            label=function.name,
        )
        assert self._runtime_api is not None
        return Environment(
            function,
            spec,
            backend=self._backends[self.isolation_of(function)],
            hooks=pool,
            serve_runtime_api=self._runtime_api.serve,
            serve_egress=self._serve_egress,
            log_sink=self.log_sink,
            init_limit=self.settings.init_timeout_seconds,
            log_limit=self.settings.log_limit_bytes,
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
        return await self.pool_for(invocation.function).invoke(invocation)

    def describe(self) -> dict[str, Any]:
        return {
            "environments": {"live": self.capacity.live, "limit": self.capacity.limit},
            "limits": {"cgroups": self._cgroups is not None, "problem": self.limits_problem},
            "functions": {name: pool.describe() for name, pool in self.pools.items()},
            "unavailable": dict(self.unavailable),
            "backend": self._backends[self.settings.isolation].status().__dict__
            if self.settings.isolation in self._backends
            else None,
            "backends": {name: backend.status().__dict__ for name, backend in self._backends.items()},
        }
