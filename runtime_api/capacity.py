"""The machine's budget of live environments, shared by every function's pool.

Like an account's concurrency limit, it bounds what all functions run at once. Idle environments
are not concurrency, so when the budget is spent the least recently used idle environment of any
function is stopped to make room; only when every environment is busy does an invoke wait or get
throttled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .environment import Environment
    from .pool import FunctionPool


class Capacity:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.live = 0
        self.pools: list[FunctionPool] = []

    def acquire(self) -> bool:
        """Take one place for a new environment, evicting an idle one elsewhere if need be."""
        if self.live >= self.limit and not self._evict_one():
            return False
        self.live += 1
        return True

    def release(self, *, wake: bool = True) -> None:
        """An environment is gone; its place may start an invocation queued in any pool (unless
        the place is being handed straight to another environment, as in an eviction)."""
        self.live -= 1
        if not wake:
            return
        for pool in self.pools:
            if self.live >= self.limit:
                return
            pool.start_queued()

    def _evict_one(self) -> bool:
        oldest: tuple[FunctionPool, Environment] | None = None
        for pool in self.pools:
            env = pool.least_recently_used_idle()
            if env is not None and (oldest is None or env.idle_since < oldest[1].idle_since):
                oldest = (pool, env)
        if oldest is None:
            return False
        pool, env = oldest
        pool.evict(env)
        return True
