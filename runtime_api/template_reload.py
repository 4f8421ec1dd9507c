"""Hot reload of the template file itself: an edit is applied while serving, without a restart.

The template is looked at twice a second (one `stat`; editors replace the file or write it in place, and
both change its inode, size or mtime). Once a change has settled (the same stamp one interval later, so a
save in progress is not read half-written), the template is loaded again as at start-up (parameters,
--env-vars, cfn-lint's decoder and SAM's rules) and the control plane applies it (`apply_template`):
removed functions stop, added ones start, changed ones are redeployed. An edit that does not load
(a YAML error, an unknown intrinsic, a missing CodeUri...) changes nothing: what was loaded before serves
on, and `template.reload_failed` says why; the next edit is tried again.

Code folders are watched apart from this, by `reload.py`, which follows the functions the template has now.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .functions import FunctionSpec
from .logs import get_logger

if TYPE_CHECKING:
    from .control import ControlPlane

log = get_logger("template")

TemplateLoader = Callable[[], list[FunctionSpec]]
_INTERVAL = 0.5  # seconds between looks at the template


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class TemplateReloader:
    def __init__(self, path: Path, load: TemplateLoader, control: ControlPlane, *, interval: float = _INTERVAL) -> None:
        self.path = path
        self._load = load
        self._control = control
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())
        log.info("template.watching", template=str(self.path))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        seen = _stamp(self.path)
        while True:
            await asyncio.sleep(self._interval)
            stamp = _stamp(self.path)
            if stamp == seen:
                continue
            await asyncio.sleep(self._interval)
            if _stamp(self.path) != stamp:
                continue  # still being written: look again
            seen = stamp
            await self.reload()

    async def reload(self) -> None:
        try:
            functions = await asyncio.to_thread(self._load)
        except Exception as exc:  # whatever the file holds, the service serves on
            log.error(
                "template.reload_failed",
                template=str(self.path),
                error=type(exc).__name__,
                detail=f"{exc} -- the template loaded before serves on; fix the file to reload it",
            )
            return
        try:
            changes = await self._control.apply_template(functions)
        except Exception:  # a bug of ours: said, and the next edit is tried again
            log.exception("template.apply_failed", template=str(self.path))
            return
        log.info("template.reloaded", template=str(self.path), **changes)
