"""A pre-started generic sandbox's runtime: everything a start does before the function is known.

Launched inside a generic sandbox (`sandbox/prestart.py`), with cwd /var/runtime and only the
start-up environment, as
`pythonX.Y -c "import sys; sys.path.insert(0, '/var/runtime'); from sandbox_bootstrap.preload import run; run()" FD`.
Importing this module imports the runtime (`main` and what it needs). `run` then says it is ready
(one byte, `R`) on the socket FD and waits for the assignment there: one JSON object,
`{"env": {...}}`, the function's complete environment, written once the service has mounted the
function's code at /var/task and its layers at /opt, and followed by the end of the stream. From
there it is a normal start: `main` reads its settings from that environment.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time

from .main import main


def run() -> None:
    fd = int(sys.argv.pop())
    assignment = _read_assignment(fd)
    if assignment is None:
        return  # the service let this sandbox go unused
    del sys.argv[1:]  # as a normal start sees it: ['-c']
    # The start-up variables are the function's already; what bwrap (PWD) and the interpreter (LC_CTYPE,
    # PEP 538) added at start stays, as it would have in a sandbox started for the function.
    os.environ.update(assignment["env"])
    time.tzset()  # TZ is read at start; the function's may differ from the start-up one
    # Nothing was imported from /var/task or /opt before their mounts arrived, but a finder cached
    # for them would list the empty folders they were.
    importlib.invalidate_caches()
    main()


def _read_assignment(fd: int) -> dict | None:
    try:
        os.write(fd, b"R")
    except OSError:  # the service let this sandbox go already
        return None
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return json.loads(b"".join(chunks)) if chunks else None
