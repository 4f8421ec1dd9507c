"""What a session may be asked for, and the bounds of each: its id, its limits, an execution's timeout,
script type and arguments. Pure checks, raising InvalidRequestError (a ValueError) with a message fit
for the client; shared by the session manager's Python API and the HTTP routes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .session_errors import InvalidRequestError

SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MIN_MEMORY_KB = 16 * 1024
MAX_MEMORY_KB = 10 * 1024 * 1024  # Lambda's largest MemorySize
MAX_CPU_QUOTA = 64.0
MIN_CPU_QUOTA = 0.01  # 1 ms of CPU per 100 ms period: the least a cgroup's CPU quota takes (else EINVAL)
MAX_TIMEOUT = 86400.0
# script_type -> (how it runs, its default file name)
SCRIPT_TYPES = {"python": ("python", "main.py"), "bash": ("shell", "main.sh"), "shell": ("shell", "main.sh"),
                "sh": ("shell", "main.sh")}  # fmt: skip
_MB_PER_VCPU = 1769  # as for functions: SANDBOX_CPU_QUOTA=0 scales the CPU with memory, as Lambda does


@dataclass(frozen=True)
class SessionLimits:
    """A session's limits: from the create request, else the SANDBOX_* settings."""

    memory_limit_kb: int
    cpu_quota: float  # cores; 0: proportional to memory
    timeout: float  # the default timeout of one execution, in seconds
    allow_network: bool

    @property
    def memory_mb(self) -> int:
        return max(1, math.ceil(self.memory_limit_kb / 1024))

    @property
    def cpu_cores(self) -> float:
        return self.cpu_quota or max(0.05, self.memory_mb / _MB_PER_VCPU)

    def as_dict(self) -> dict[str, Any]:
        return {
            "memory_limit": self.memory_limit_kb,
            "cpu_quota": self.cpu_quota,
            "timeout": self.timeout,
            "allow_network": self.allow_network,
        }


def session_limits(
    defaults: SessionLimits,
    *,
    allow_network: object = None,
    cpu_quota: object = None,
    memory_limit_kb: object = None,
    timeout: object = None,
) -> SessionLimits:
    """A session's limits: the given ones (checked), else `defaults`."""
    if allow_network is not None and not isinstance(allow_network, bool):
        raise InvalidRequestError("allow_network must be true or false")
    memory = _number("memory_limit", memory_limit_kb, MIN_MEMORY_KB, MAX_MEMORY_KB, integer=True)
    cpu = _number("cpu_quota", cpu_quota, 0, MAX_CPU_QUOTA)
    if cpu and cpu < MIN_CPU_QUOTA:
        raise InvalidRequestError(
            f"cpu_quota must be 0 (CPU proportional to memory) or between {MIN_CPU_QUOTA:g} and {MAX_CPU_QUOTA:g}"
        )
    return SessionLimits(
        memory_limit_kb=defaults.memory_limit_kb if memory is None else int(memory),
        cpu_quota=defaults.cpu_quota if cpu is None else float(cpu),
        timeout=defaults.timeout if timeout is None else execution_timeout(timeout),
        allow_network=defaults.allow_network if allow_network is None else allow_network,
    )


def check_session_id(session_id: object) -> str:
    if not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
        raise InvalidRequestError(
            "a session id is 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
        )
    return session_id


def execution_timeout(value: object) -> float:
    seconds = _number("timeout", value, 0, MAX_TIMEOUT)
    if seconds is None or seconds <= 0:
        raise InvalidRequestError(f"timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}")
    return float(seconds)


def _number(name: str, value: object, low: float, high: float, *, integer: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not float(value).is_integer()):
        raise InvalidRequestError(f"{name} must be {'an integer' if integer else 'a number'}")
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidRequestError(f"{name} must be between {low:g} and {high:g}")
    return value


def script_type_of(script_type: object) -> tuple[str, str]:
    if not isinstance(script_type, str) or script_type.lower() not in SCRIPT_TYPES:
        raise InvalidRequestError(f"script_type must be one of {', '.join(SCRIPT_TYPES)}")
    return SCRIPT_TYPES[script_type.lower()]


def arguments_of(args: object) -> list[str]:
    if args is None:
        return []
    if not isinstance(args, list | tuple) or not all(isinstance(arg, str) for arg in args):
        raise InvalidRequestError("args must be a list of strings")
    if any("\0" in arg for arg in args):
        raise InvalidRequestError("args must not contain NUL characters")
    return list(args)
