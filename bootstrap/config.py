"""Everything the bootstrap reads from its environment, read once at start-up."""

from __future__ import annotations

from .logs import log_level_from_env
from .marshalling import ensure_ascii_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_RUNTIME_API = "127.0.0.1:9001"
DEFAULT_TASK_ROOT = "/var/task"
DEFAULT_RUNTIME_DIR = "/var/runtime"


class Settings:
    __slots__ = ("ensure_ascii", "handler", "json_logs", "log_level", "runtime_api", "runtime_dir", "task_root")

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.handler = environ.get("_HANDLER", "")
        self.runtime_api = environ.get("AWS_LAMBDA_RUNTIME_API") or DEFAULT_RUNTIME_API
        self.task_root = environ.get("LAMBDA_TASK_ROOT") or DEFAULT_TASK_ROOT
        self.runtime_dir = environ.get("LAMBDA_RUNTIME_DIR") or DEFAULT_RUNTIME_DIR
        self.json_logs = (environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON"
        self.log_level = log_level_from_env(environ.get("AWS_LAMBDA_LOG_LEVEL"))
        self.ensure_ascii = ensure_ascii_for(environ.get("AWS_EXECUTION_ENV"))
