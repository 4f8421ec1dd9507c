"""The one configuration object: defaults, overridden by SANDBOX_* variables, overridden by flags.

Built once at start-up and passed down; nothing below reads os.environ.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MAX_STATUS_RING = 100_000  # SANDBOX_STATUS_INVOCATIONS and SANDBOX_STATUS_LOG_LINES at most


class ConfigError(Exception):
    pass


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _uid_range(value: str) -> tuple[int, int]:
    first, _, last = value.partition("-")
    low, high = int(first), int(last or first)
    if low <= 0 or high < low:
        raise ValueError(f"expected FIRST-LAST with 0 < FIRST <= LAST, got {value!r}")
    return low, high


@dataclass(frozen=True)
class Settings:
    """Every knob of the service. `env` names the variable that sets a field."""

    host: str = field(default="127.0.0.1", metadata={"env": "SANDBOX_HOST"})
    port: int = field(default=8000, metadata={"env": "SANDBOX_PORT"})
    template: Path | None = field(default=None, metadata={"env": "SANDBOX_TEMPLATE"})
    # `--env-vars`: a JSON file of environment variables for template functions, in SAM's format.
    env_vars: Path | None = field(default=None, metadata={"env": "SANDBOX_ENV_VARS"})
    isolation: str = field(default="bwrap", metadata={"env": "SANDBOX_ISOLATION"})  # bwrap | docker
    # The Docker engine of the docker isolation (and of PackageType Image functions).
    docker_host: str = field(default="unix:///var/run/docker.sock", metadata={"env": "SANDBOX_DOCKER_HOST"})
    # The original Sandbox Runtime's variables, same meaning.
    # Cores per sandbox (CFS quota); 0 (or "proportional") scales with memory as Lambda does.
    cpu_quota: float = field(default=2.0, metadata={"env": "SANDBOX_CPU_QUOTA"})
    memory_limit_kb: int = field(default=131072, metadata={"env": "SANDBOX_MEMORY_LIMIT"})
    allow_network: bool = field(default=True, metadata={"env": "SANDBOX_ALLOW_NETWORK"})
    timeout_seconds: int = field(default=300, metadata={"env": "SANDBOX_TIMEOUT_SECONDS"})
    pool_size: int = field(default=2, metadata={"env": "SANDBOX_POOL_SIZE"})
    # Pre-started generic sandboxes kept ready per runtime (sandbox/prestart.py): a cold start takes one.
    generic_pool_size: int = field(default=2, metadata={"env": "SANDBOX_GENERIC_POOL_SIZE"})
    # Execution model.
    max_concurrency: int = field(default=64, metadata={"env": "SANDBOX_MAX_CONCURRENCY"})  # per function
    max_environments: int = field(default=256, metadata={"env": "SANDBOX_MAX_ENVIRONMENTS"})  # all functions
    queue_timeout_seconds: float = field(default=1.0, metadata={"env": "SANDBOX_QUEUE_TIMEOUT"})
    keep_alive_seconds: float = field(default=600.0, metadata={"env": "SANDBOX_KEEP_ALIVE"})
    # Pre-started environments (SANDBOX_POOL_SIZE) starting at once, machine-wide; 0: twice the CPUs.
    prestart_concurrency: int = field(default=0, metadata={"env": "SANDBOX_PRESTART_CONCURRENCY"})
    init_timeout_seconds: float = field(default=10.0, metadata={"env": "SANDBOX_INIT_TIMEOUT"})
    log_limit_bytes: int = field(default=1024 * 1024, metadata={"env": "SANDBOX_LOG_LIMIT"})  # per invocation
    event_retry_delay_seconds: float = field(default=1.0, metadata={"env": "SANDBOX_EVENT_RETRY_DELAY"})
    shutdown_timeout_seconds: float = field(default=30.0, metadata={"env": "SANDBOX_SHUTDOWN_TIMEOUT"})
    # The status page (GET /): the last invocations and log lines it shows, each kept in a ring of this size.
    status_invocations: int = field(default=200, metadata={"env": "SANDBOX_STATUS_INVOCATIONS"})
    status_log_lines: int = field(default=1000, metadata={"env": "SANDBOX_STATUS_LOG_LINES"})
    # Agent sessions (/workspace/se/...): their own budget, apart from SANDBOX_MAX_ENVIRONMENTS.
    max_sessions: int = field(default=16, metadata={"env": "SANDBOX_MAX_SESSIONS"})
    session_idle_timeout_seconds: float = field(default=1800.0, metadata={"env": "SANDBOX_SESSION_IDLE_TIMEOUT"})
    # Warm session sandboxes kept started; unset: SANDBOX_POOL_SIZE.
    session_pool_size: int | None = field(default=None, metadata={"env": "SANDBOX_SESSION_POOL_SIZE"})
    session_workspace_mb: int = field(default=512, metadata={"env": "SANDBOX_SESSION_WORKSPACE_SIZE"})  # a tmpfs
    session_max_file_mb: int = field(default=100, metadata={"env": "SANDBOX_SESSION_MAX_FILE_SIZE"})  # up/download
    session_output_limit_bytes: int = field(default=1024 * 1024, metadata={"env": "SANDBOX_SESSION_OUTPUT_LIMIT"})
    # Host-wide kernel trade-off that makes each sandbox's cgroup attach ~0.1 ms instead of 2-20 ms.
    cgroup_favordynmods: bool = field(default=False, metadata={"env": "SANDBOX_CGROUP_FAVORDYNMODS"})
    strict_runtimes: bool = field(default=False, metadata={"env": "SANDBOX_STRICT_RUNTIMES"})
    uid_range: tuple[int, int] = field(default=(200000, 265535), metadata={"env": "SANDBOX_UID_RANGE"})
    state_dir: Path | None = field(default=None, metadata={"env": "SANDBOX_STATE_DIR"})
    # Functions created through the control plane (configuration and code), kept across restarts.
    data_dir: Path = field(default=Path("/var/lib/sandbox-runtime"), metadata={"env": "SANDBOX_DATA_DIR"})
    # Where CreateFunction/UpdateFunctionCode fetch S3Bucket/S3Key packages ("" = AWS's own endpoint).
    s3_endpoint: str = field(default="", metadata={"env": "SANDBOX_S3_ENDPOINT"})
    # Built once, reused by every start: /var/runtime (bootstrap + SDK) compiled per interpreter.
    cache_dir: Path = field(default=Path("/var/cache/sandbox-runtime"), metadata={"env": "SANDBOX_CACHE_DIR"})
    # `sandbox-runtime build` output, read by serve/invoke; None: .sandbox-runtime/build next to the template.
    build_dir: Path | None = field(default=None, metadata={"env": "SANDBOX_BUILD_DIR"})
    # serve: a change under a function's CodeUri (or a new build) is served from the next invoke on.
    hot_reload: bool = field(default=True, metadata={"env": "SANDBOX_HOT_RELOAD"})
    # AWS identity the service presents.
    region: str = field(default="us-east-1", metadata={"env": "SANDBOX_REGION"})
    account_id: str = field(default="123456789012", metadata={"env": "SANDBOX_ACCOUNT_ID"})
    # Heartbeat: POST the service's status and capacity to this URL every interval seconds ("" = off).
    heartbeat_url: str = field(default="", metadata={"env": "SANDBOX_HEARTBEAT_URL"})
    heartbeat_interval_seconds: float = field(default=30.0, metadata={"env": "SANDBOX_HEARTBEAT_INTERVAL"})
    # Logging.
    log_level: str = field(default="info", metadata={"env": "SANDBOX_LOG_LEVEL"})
    log_format: str = field(default="auto", metadata={"env": "SANDBOX_LOG_FORMAT"})  # auto | json | console

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Defaults (the fields', then a command's own `defaults`) < environment < `overrides`
        (flags; None values mean "not given")."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = dict(defaults or {})
        for f in fields(cls):
            name = f.metadata["env"]
            if name in environ:
                try:
                    values[f.name] = _convert(f, environ[name])
                except ValueError as exc:
                    raise ConfigError(f"{name}: {exc}") from None
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = value
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.isolation not in {"bwrap", "docker"}:
            raise ConfigError(f"SANDBOX_ISOLATION must be bwrap or docker, got {self.isolation!r}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1-65535, got {self.port}")
        for name in ("pool_size", "generic_pool_size", "max_concurrency", "max_sessions", "prestart_concurrency"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.session_pool_size is not None and self.session_pool_size < 0:
            raise ConfigError("SANDBOX_SESSION_POOL_SIZE must not be negative")
        if self.memory_limit_kb < 16384:
            raise ConfigError("SANDBOX_MEMORY_LIMIT is in KB and must be at least 16384 (16 MB)")
        if self.timeout_seconds <= 0 or self.session_idle_timeout_seconds <= 0:
            raise ConfigError("SANDBOX_TIMEOUT_SECONDS and SANDBOX_SESSION_IDLE_TIMEOUT must be above 0")
        for name in ("session_workspace_mb", "session_max_file_mb", "session_output_limit_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.max_concurrency < 1:
            raise ConfigError("SANDBOX_MAX_CONCURRENCY must be at least 1")
        if self.max_environments < 1:
            raise ConfigError("SANDBOX_MAX_ENVIRONMENTS must be at least 1")
        if self.heartbeat_interval_seconds <= 0:
            raise ConfigError("SANDBOX_HEARTBEAT_INTERVAL must be above 0")
        if self.heartbeat_url and not self.heartbeat_url.startswith(("http://", "https://")):
            raise ConfigError(f"SANDBOX_HEARTBEAT_URL must be an http:// or https:// URL, got {self.heartbeat_url!r}")
        for name in ("status_invocations", "status_log_lines"):
            if not 0 <= getattr(self, name) <= MAX_STATUS_RING:
                raise ConfigError(f"{name} must be 0-{MAX_STATUS_RING}, got {getattr(self, name)}")
        if self.log_format not in {"auto", "json", "console"}:
            raise ConfigError(f"SANDBOX_LOG_FORMAT must be auto, json or console, got {self.log_format!r}")


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind == "bool":
        return _flag(raw)
    if kind == "int":
        return int(raw)
    if kind == "int | None":
        return int(raw) if raw.strip() else None
    if kind == "float":
        return 0.0 if raw.strip().lower() == "proportional" else float(raw)
    if kind == "Path | None":
        return Path(raw) if raw else None
    if kind == "Path":
        return Path(raw)
    if kind == "tuple[int, int]":
        return _uid_range(raw)
    return raw
