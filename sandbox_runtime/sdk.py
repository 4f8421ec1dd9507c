"""`from sandbox_runtime.sdk import SandboxClient`, as in the original Sandbox Runtime: `runtime_api.sdk` under
its original name."""

from runtime_api.sdk import *  # noqa: F403
from runtime_api.sdk import __all__  # noqa: F401
