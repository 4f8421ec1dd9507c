"""Host uids for sandboxes: a distinct unprivileged uid for every sandbox alive at once.

Distinct uids keep concurrent sandboxes from signalling, tracing or writing each other's files
even where namespaces would not, and keep per-uid kernel accounting (RLIMIT_NPROC) separate.
"""

from __future__ import annotations

import threading


class UidExhausted(Exception):
    pass


class UidPool:
    def __init__(self, first: int, count: int) -> None:
        if first <= 0 or count <= 0:
            raise ValueError("the sandbox uid range must be positive and non-empty")
        self.first = first
        self.count = count
        self._free = list(range(first + count - 1, first - 1, -1))
        self._lock = threading.Lock()

    def acquire(self) -> int:
        with self._lock:
            if not self._free:
                raise UidExhausted(f"all {self.count} sandbox uids from {self.first} are in use")
            return self._free.pop()

    def release(self, uid: int) -> None:
        with self._lock:
            if self.first <= uid < self.first + self.count and uid not in self._free:
                # Reuse the least recently freed uid last: a just-freed uid may still own dying processes.
                self._free.insert(0, uid)
