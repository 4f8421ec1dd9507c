"""Isolation backends behind one small interface: start a sandbox from a spec, watch it, kill it."""

from .spec import (
    RUNTIME_API_HOST,
    RUNTIME_API_PORT,
    WORKSPACE_PATH,
    Backend,
    BackendStatus,
    LimitEvents,
    Sandbox,
    SandboxError,
    SandboxSpec,
)
from .staging import CodeStager
from .uids import UidExhausted, UidPool

__all__ = [
    "RUNTIME_API_HOST",
    "RUNTIME_API_PORT",
    "WORKSPACE_PATH",
    "Backend",
    "BackendStatus",
    "CodeStager",
    "LimitEvents",
    "Sandbox",
    "SandboxError",
    "SandboxSpec",
    "UidExhausted",
    "UidPool",
]
