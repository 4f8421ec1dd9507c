"""Entry point: prepare the process, load the handler (or report why not), then serve invocations.

Launched inside the sandbox, with cwd /var/runtime, as
`pythonX.Y -c "import sys; sys.path.insert(0, '/var/runtime'); from sandbox_bootstrap.main import main; main()"`.
"""

from __future__ import annotations

import os
import sys

from .client import RuntimeClient, RuntimeClientError, user_agent
from .config import Settings
from .errors import FaultError, error_from_exception
from .handler import load_handler
from .invoke import handle_invocation
from .logs import UNHANDLED_EXCEPTION_WARNING, flush_stdio, setup_logging, unbuffer_stdio, write_error
from .marshalling import JsonCodec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from .handler import Handler


def main() -> None:
    settings = Settings(os.environ)
    prepare_sys_path(settings.task_root, settings.runtime_dir)
    _enter(settings.task_root)
    unbuffer_stdio()
    setup_logging(settings.json_logs, settings.log_level)
    codec = JsonCodec(settings.ensure_ascii)
    try:
        client = RuntimeClient(settings.runtime_api, user_agent())
        handler = _load_or_report(settings, client, codec)
        while True:
            handle_invocation(client.next_invocation(), handler, client, codec, settings.json_logs)
    except RuntimeClientError as exc:
        _exit_on_runtime_api_failure(exc)


def prepare_sys_path(task_root: str, runtime_dir: str) -> None:
    """Function code first: task root, layer paths, runtime dir, then the interpreter's own path.

    The launcher's '' (the cwd) and runtime dir entries are dropped from where they were.
    """
    try:
        launch_dir = os.getcwd()
    except OSError:
        launch_dir = ""
    dropped = {os.path.abspath(runtime_dir), launch_dir}
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    front = [task_root, f"/opt/python/lib/{version}/site-packages", "/opt/python", runtime_dir]
    rest = [p for p in sys.path if p and p not in front and os.path.abspath(p) not in dropped]
    sys.path[:] = front + rest


def _enter(task_root: str) -> None:
    # Without it, the handler's import fails with Runtime.ImportModuleError, as it should.
    # (Not contextlib.suppress: nothing else imports contextlib at start on Python 3.9 and 3.10.)
    try:  # noqa: SIM105
        os.chdir(task_root)
    except OSError:
        pass


def _load_or_report(settings: Settings, client: RuntimeClient, codec: JsonCodec) -> Handler:
    """The handler; or log the failure, post it to /init/error and exit(1), as awslambdaric does."""
    try:
        return load_handler(settings.handler)
    except FaultError as fault:
        error = fault.payload()
    except Exception as exc:
        error = error_from_exception(exc)
    import logging  # our handler is on the root logger from then on (see setup_logging)

    logging.warning(UNHANDLED_EXCEPTION_WARNING)
    write_error(error, settings.json_logs, codec)
    flush_stdio()
    client.post_init_error(codec.encode_error(error), error["errorType"])
    sys.exit(1)


def _exit_on_runtime_api_failure(exc: RuntimeClientError) -> NoReturn:
    flush_stdio()
    sys.stderr.write(f"[sandbox-runtime-bootstrap] Runtime API failure, exiting: {exc}\n")
    sys.stderr.flush()
    sys.exit(1)
