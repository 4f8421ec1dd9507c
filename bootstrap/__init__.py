"""The in-sandbox Lambda runtime interface client for `python3.x` runtimes (standard library only).

Inside a sandbox this directory is mounted at /var/runtime/sandbox_bootstrap and started with
`from sandbox_bootstrap.main import main; main()`, so every import inside the package is relative.
It behaves like awslambdaric for the function: handler resolution and its errors, LambdaContext,
JSON marshalling, error payloads and stack traces, and the Text/JSON log formats.
"""
