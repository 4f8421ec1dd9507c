"""The original Sandbox Runtime's import name: `from sandbox_runtime.sdk import SandboxClient` (the SDK lives
in `runtime_api.sdk`)."""
