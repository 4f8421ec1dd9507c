"""The Extensions API (2020-01-01): external extensions, their launcher, registrations and events
(reference/runtime-api.md §2.1, §2.2).

External extensions are the executables directly in /opt/extensions (layers put them there). The
service lists them in the function's staged /opt once per pool, on the host; a function without any
keeps its command exactly as it was. One with some runs `launcher_command`: a POSIX shell that starts
each extension with the reduced environment Lambda gives extensions, its output going to the sandbox's
second output channel (EXTENSION_OUTPUT_PATH), then runs the runtime and stays the sandbox's first
process so that, at shutdown, the runtime can be stopped while the extensions carry on with their
SHUTDOWN event.

`Extensions` holds one environment's registrations (external ones, by their file name, and internal
ones registered by the runtime's own process) and hands each its events. The environment decides when
events are due and when the lifecycle may move on; this module keeps the Extensions API's rules and
its exact 403 answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import uuid
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandbox.spec import EXTENSION_OUTPUT_PATH

from .apierror import RuntimeAPIError

MAX_EXTENSIONS = 10  # per function, external and internal together (RIE's MaxAgentsAllowed)
INVOKE, SHUTDOWN = "INVOKE", "SHUTDOWN"
DISABLE_FILE = "disable-extensions-jwigqn8j"  # in /opt: extensions (and their APIs) are off
SHUTDOWN_BUDGET_MS = 2000  # with external extensions; the runtime's part comes first
RUNTIME_SHUTDOWN_MS = 300  # the runtime's part, after its SIGTERM
INTERNAL_SHUTDOWN_MS = 500  # with internal extensions only

# What an extension's environment lacks compared with the runtime's (besides every `_` name).
_NOT_FOR_EXTENSIONS = (
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_DAEMON_ADDRESS",
    "LAMBDA_RUNTIME_DIR",
    "LAMBDA_TASK_ROOT",
)

# The launcher (sh -c): start the extensions (lines inserted at EXTENSIONS), then the runtime ("$@").
# It waits for the runtime and exits with its status, so a runtime that dies ends the sandbox as it
# would without extensions. A SIGTERM (the service's graceful shutdown) is passed on to the runtime,
# which is killed RUNTIME_SHUTDOWN_MS later if still there; the launcher then waits for the extensions
# to exit (they got SHUTDOWN), until the service kills the sandbox at the end of the budget.
_LAUNCHER = """exec 3>{output}
{extensions}
exec 3>&-
"$@" &
rt=$!
stopping=
trap 'stopping=1; kill -TERM "$rt" 2>/dev/null' TERM
wait "$rt"
status=$?
[ -z "$stopping" ] && exit "$status"
( sleep {grace}; kill -KILL "$rt" 2>/dev/null ) &
wait "$rt"
wait
exit 0
"""


def external_extensions(opt_dir: Path | None) -> tuple[str, ...]:
    """The file names of the executables directly in <opt>/extensions, in order (subfolders and
    non-executables skipped); none when <opt>/disable-extensions-jwigqn8j exists. Blocking."""
    if opt_dir is None:
        return ()
    folder = opt_dir / "extensions"
    try:
        if (opt_dir / DISABLE_FILE).exists():
            return ()
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return ()
    names = []
    for entry in entries:
        try:
            if entry.is_file() and os.stat(entry.path).st_mode & 0o111:
                names.append(entry.name)
        except OSError:
            continue
    return tuple(names)


def extensions_disabled(opt_dir: Path | None) -> bool:
    return opt_dir is not None and (opt_dir / DISABLE_FILE).exists()


def launcher_command(names: tuple[str, ...], command: tuple[str, ...], env: Mapping[str, str]) -> tuple[str, ...]:
    """The sandbox command that starts `names` (in /opt/extensions) and then the runtime `command`."""
    dropped = sorted({key for key in env if key.startswith("_")} | {k for k in _NOT_FOR_EXTENSIONS if k in env})
    unset = " ".join(f"-u {shlex.quote(key)}" for key in dropped)
    lines = [f"/usr/bin/env {unset} {shlex.quote('/opt/extensions/' + name)} >&3 2>&3 3>&- &" for name in names]
    script = _LAUNCHER.format(
        output=EXTENSION_OUTPUT_PATH, extensions="\n".join(lines), grace=f"{RUNTIME_SHUTDOWN_MS / 1000:.1f}"
    )
    return ("/bin/sh", "-c", script, "sandbox-extensions", *command)


def extension_error(error_type: str, message: str) -> RuntimeAPIError:
    return RuntimeAPIError(403, error_type, message)


class Extension:
    """One registered extension."""

    __slots__ = ("events", "external", "id", "name", "queue", "state", "waiter")

    def __init__(self, name: str, events: frozenset[str], *, external: bool) -> None:
        self.id = str(uuid.uuid4())
        self.name = name
        self.events = events
        self.external = external
        # Registered → (first /event/next) Ready ⇄ Running (an event handed over, until its next /event/next);
        # InitError / ExitError once it reported one.
        self.state = "Registered"
        self.queue: deque[dict[str, Any]] = deque()
        self.waiter: asyncio.Future[dict[str, Any]] | None = None


class Extensions:
    """The registrations of one environment. `launched` are the external extensions its launcher started."""

    def __init__(self, launched: tuple[str, ...], *, enabled: bool = True) -> None:
        self.launched = launched
        self.enabled = enabled
        self.by_id: dict[str, Extension] = {}
        self.by_name: dict[str, Extension] = {}
        self.open = True  # registration is open until init completes

    def __bool__(self) -> bool:
        return bool(self.by_id)

    @property
    def all_external_registered(self) -> bool:
        return all(name in self.by_name for name in self.launched)

    @property
    def ready(self) -> bool:
        """Every registered extension has called /event/next since its registration."""
        return all(ext.state != "Registered" for ext in self.by_id.values())

    def subscribed(self, event: str) -> list[Extension]:
        return [ext for ext in self.by_id.values() if event in ext.events and ext.state in ("Ready", "Running")]

    def register(self, name: str, body: bytes) -> Extension:
        if not name:
            raise extension_error("Extension.InvalidExtensionName", "Empty extension name")
        try:
            request = json.loads(body or b"null")
            if not isinstance(request, dict):
                raise ValueError("the body must be a JSON object")
            events = request.get("events") or []
            if not isinstance(events, list) or not all(isinstance(event, str) for event in events):
                raise ValueError("events must be a list of strings")
        except (ValueError, RecursionError) as exc:
            raise extension_error("InvalidRequestFormat", str(exc)) from None
        if request.get("configurationKeys"):
            raise extension_error(
                "InvalidRequestFormat", "configurationKeys are deprecated; use environment variables instead"
            )
        external = name in self.launched
        allowed = (INVOKE, SHUTDOWN) if external else (INVOKE,)
        for event in events:
            if event not in allowed:
                raise extension_error("Extension.InvalidEventType", f"{event}: ErrorInvalidEventType")
        existing = self.by_name.get(name)
        if external and existing is not None:
            raise extension_error(
                "Extension.InvalidExtensionState",
                f"State transition from {existing.state} to Registered failed for extension {name}. "
                "Error: State transition is not allowed",
            )
        if not self.open:
            raise extension_error("Extension.RegistrationClosed", "Extension registration closed already")
        if not external:
            if existing is not None:
                raise extension_error("Extension.InvalidExtensionState", "Extension with this name already registered")
            internal = sum(1 for ext in self.by_id.values() if not ext.external)
            if len(self.launched) + internal >= MAX_EXTENSIONS:
                raise extension_error("Extension.TooManyExtensions", f"Extension limit ({MAX_EXTENSIONS}) reached")
        extension = Extension(name, frozenset(events), external=external)
        self.by_id[extension.id] = extension
        self.by_name[name] = extension
        return extension

    def identify(self, header: str | None, *, error_type_header: str | bool | None = False) -> Extension:
        """The extension a request's Lambda-Extension-Identifier names, or the API's 403. For the error
        routes (`error_type_header` given) Lambda-Extension-Function-Error-Type is required too."""
        if not header:
            raise extension_error("Extension.MissingExtensionIdentifier", "Missing Lambda-Extension-Identifier header")
        try:
            uuid.UUID(header)
        except ValueError:
            raise extension_error(
                "Extension.InvalidExtensionIdentifier", "Invalid Lambda-Extension-Identifier"
            ) from None
        if error_type_header is not False and not error_type_header:
            raise extension_error("Extension.MissingHeader", "Lambda-Extension-Function-Error-Type not found")
        extension = self.by_id.get(header)
        if extension is None:
            if error_type_header is not False:
                raise extension_error("Extension.UnknownExtensionIdentifier", "Unknown Lambda-Extension-Identifier")
            raise extension_error("Extension.UnknownExtensionIdentifier", f"Unknown extension {header}")
        return extension

    def deliver(self, extension: Extension, event: dict[str, Any]) -> None:
        """Hand an event to an extension: at once if it waits in /event/next, else at its next call."""
        waiter = extension.waiter
        if waiter is not None and not waiter.done():
            extension.waiter = None
            extension.state = "Running"
            waiter.set_result(event)
        else:
            extension.queue.append(event)

    def take(self, extension: Extension) -> dict[str, Any] | asyncio.Future[dict[str, Any]]:
        """/event/next: the extension is done with what it had; its next event, or a future for it."""
        if extension.state in ("InitError", "ExitError"):
            raise extension_error(
                "Extension.InvalidExtensionState",
                f"State transition from {extension.state} to Ready failed for extension {extension.id}. "
                "Error: State transition is not allowed",
            )
        if extension.waiter is not None and not extension.waiter.done():
            raise extension_error(
                "Extension.InvalidExtensionState",
                f"State transition from Ready to Ready failed for extension {extension.id}. "
                "Error: State transition is not allowed",
            )
        if extension.queue:
            extension.state = "Running"
            return extension.queue.popleft()
        extension.state = "Ready"
        extension.waiter = asyncio.get_running_loop().create_future()
        return extension.waiter

    def close(self) -> None:
        """The environment ended: nobody waits for events any more."""
        for extension in self.by_id.values():
            if extension.waiter is not None and not extension.waiter.done():
                extension.waiter.set_exception(
                    extension_error("Extension.InvalidExtensionState", "The execution environment has ended")
                )
