"""Shared by the fuzzing tests (tests/test_fuzz_*.py): how many examples to run, and the service
process's resource usage, to tell a leak from noise."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

# SANDBOX_FUZZ_EXAMPLES scales every fuzzing test: the defaults keep CI bounded, a larger value
# (e.g. 500) is a longer hunt: `SANDBOX_FUZZ_EXAMPLES=500 scripts/test tests/test_fuzz_*.py`.
SCALE = os.environ.get("SANDBOX_FUZZ_EXAMPLES")


def examples(default: int) -> int:
    return int(SCALE) if SCALE else default


def fuzz_settings(default: int) -> settings:
    return settings(
        max_examples=examples(default),
        deadline=None,
        database=None,  # no .hypothesis folder in the repository; a failure prints its reproducer
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


def usage(pid: int) -> tuple[int, int]:
    """(open file descriptors, resident set size in KB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return fds, rss
