"""The machine's budget of live environments, shared by every function's pool.

Like an account's concurrency limit, it bounds what all functions run at once. Idle environments
are not concurrency, so when the budget is spent the least recently used idle environment of any
function is stopped to make room; only when every environment is busy does an invoke wait or get
throttled.

It also paces pre-starts (`SANDBOX_POOL_SIZE` environments started with no invocation waiting): at most
`prestarts` of them are starting at once, machine-wide. Hundreds started together on a small machine
compete for the same CPUs until each one's init takes longer than the init timeout and fails; paced,
each starts about as fast as one alone, and an invocation's own cold start is never held back by them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .environment import Environment
    from .pool import FunctionPool


class Capacity:
    def __init__(self, limit: int, *, prestarts: int = 4) -> None:
        self.limit = limit
        self.live = 0
        self.pools: list[FunctionPool] = []
        self.prestart_limit = max(1, prestarts)
        self.prestarting = 0  # pre-started environments not READY yet

    def may_prestart(self) -> bool:
        return self.prestarting < self.prestart_limit

    def prestart_done(self) -> None:
        """A pre-started environment is READY (or gone): its turn goes to the next pool wanting one."""
        self.prestarting -= 1
        for pool in list(self.pools):
            if not self.may_prestart():
                return
            pool.prestart()

    def acquire(self, *, evict: bool = True) -> bool:
        """Take one place for a new environment, evicting an idle one elsewhere if need be (and allowed:
        a pre-start never evicts, or pools wanting more warm environments than the budget holds would
        stop each other's in turn, forever)."""
        if self.live >= self.limit and not (evict and self._evict_one()):
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
