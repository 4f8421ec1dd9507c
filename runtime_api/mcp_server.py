"""MCP (Model Context Protocol): the template's functions as tools, on the official `mcp` SDK's low-level server.

Two transports serve the same tools:
- stdio: `sandbox-runtime mcp` (`run_stdio`), the service in-process and no HTTP server, for an MCP client that
  launches its servers as commands (Claude Desktop, IDEs);
- streamable HTTP: `/mcp` on `serve` (`http_manager`, mounted lazily by `mcp_http.MCPEndpoint`).

A function's tool: its name (MCP's charset already contains Lambda's), the template Description, and
`Metadata.SandboxRuntime.InputSchema` as the input schema (else any object). Calling it invokes the function with
the arguments as the event: its JSON result comes back as text; a function error, a timeout, a throttle or a
function that cannot run is a tool error (`isError`), never a protocol error.

Importing this module imports the SDK (about a second): `app` reaches it only through `mcp_http`, on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import anyio
import jsonschema
import mcp_types as types
import orjson
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError

from . import __version__
from .errors import LambdaServiceError, TooManyRequestsException
from .functions import FunctionSpec
from .invocation import MAX_REQUEST_BYTES, Invocation, InvocationResult
from .logs import get_logger
from .mcp_sessions import SessionBackend, SessionTools, sessions_of

log = get_logger("mcp")

SERVER_NAME = "sandbox-runtime"
FREE_FORM_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": True}
_TOOL_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_MAX_TOOL_NAME = 64  # MCP allows 128; 64 is what model APIs accept (and Lambda's own limit)
_STDIO_LINE_LIMIT = 64 * 1024 * 1024  # one JSON-RPC message per line; a 6 MB event escaped fits easily
_INSTRUCTIONS = (
    "Each tool runs one AWS Lambda function of a SAM template in its own sandbox: the tool's arguments are the "
    "function's event, and its result is the function's JSON response."
)


def tool_name(name: str) -> str:
    """An MCP tool name for a function name: MCP's characters (A-Z a-z 0-9 _ - .), at most 64 of them.
    Lambda's names already fit, so this only changes names from elsewhere."""
    cleaned = "".join(c if c in _TOOL_NAME_CHARS else "_" for c in name)[:_MAX_TOOL_NAME]
    return cleaned or "function"


def describe(function: FunctionSpec) -> str:
    if function.description.strip():
        return function.description.strip()
    what = function.runtime or f"image {function.image_uri}"
    handler = f", handler {function.handler}" if function.handler else ""
    return (
        f"Invoke the Lambda function {function.name} ({what}{handler}). The arguments are its event (a JSON "
        "object); the result is the function's JSON response."
    )


class FunctionTools:
    """The functions of a Service as MCP tools: listing them, and calling one (an invocation)."""

    def __init__(self, service: Any, *, reserved: frozenset[str] = frozenset()) -> None:
        self.service = service
        self.reserved = reserved  # names other tools (sessions) own: a function taking one gets a suffix
        self._validators: dict[int, tuple[Mapping[str, Any], Any]] = {}

    def functions(self) -> dict[str, FunctionSpec]:
        """Tool name -> function ($LATEST), in registry order; functions that cannot run here are left out."""
        unavailable = self.service.unavailable
        named: dict[str, FunctionSpec] = {}
        for function in self.service.registry:
            if function.key in unavailable:
                continue
            base = name = tool_name(function.name)
            n = 1
            while name in named or name in self.reserved:
                suffix = "_function" if n == 1 else f"_function{n}"
                name = base[: _MAX_TOOL_NAME - len(suffix)] + suffix
                n += 1
            named[name] = function
        return named

    def tools(self) -> list[types.Tool]:
        return [
            types.Tool(
                name=name,
                title=function.name if function.logical_id in (None, function.name) else function.logical_id,
                description=describe(function),
                input_schema=dict(function.input_schema or FREE_FORM_SCHEMA),
            )
            for name, function in self.functions().items()
        ]

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        function = self.functions().get(name)
        return None if function is None else dict(function.input_schema or FREE_FORM_SCHEMA)

    def owns(self, name: str) -> bool:
        return name in self.functions()

    async def call(self, name: str, arguments: Mapping[str, Any] | None) -> types.CallToolResult:
        function = self.functions().get(name)
        if function is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")
        event = dict(arguments or {})
        if function.input_schema is not None and (problem := self._invalid(function, event)):
            return error_result(f"Invalid arguments for {name}: {problem}")
        try:
            payload = orjson.dumps(event)
        except TypeError:  # integers past 64 bits, which JSON (and Invoke) accept
            payload = json.dumps(event).encode()
        if len(payload) > MAX_REQUEST_BYTES:
            return error_result(f"The event is {len(payload)} bytes; an invocation takes at most {MAX_REQUEST_BYTES}.")
        try:
            result = await _invoke(self.service, Invocation(function=function, payload=payload))
        except TooManyRequestsException as exc:
            reason = exc.members.get("Reason", "")
            return error_result(
                f"Throttled: {function.name} is already running as many times as it may ({reason}); "
                "try again in a moment."
            )
        except LambdaServiceError as exc:
            return error_result(f"{function.name} cannot be invoked: {exc.code}: {exc.message}")
        return invocation_result(function, result)

    def _invalid(self, function: FunctionSpec, event: dict[str, Any]) -> str | None:
        schema = function.input_schema
        assert schema is not None
        cached = self._validators.get(id(schema))  # the schema is kept with its validator: ids stay unique
        if cached is None:
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            cached = self._validators[id(schema)] = (schema, cls(schema))
        error = jsonschema.exceptions.best_match(cached[1].iter_errors(event))
        if error is None:
            return None
        where = "/".join(str(part) for part in error.absolute_path)
        return f"{error.message}" + (f" (at {where})" if where else "")


async def _invoke(service: Any, invocation: Invocation) -> InvocationResult:
    """Invoke, carrying on when the MCP request is cancelled: the function runs to its end, as on Lambda
    when the caller goes away, and its environment stays consistent."""
    task = asyncio.ensure_future(service.invoke(invocation))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, whoever still waits
    return await asyncio.shield(task)


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def error_result(message: str, *extra: str) -> types.CallToolResult:
    return types.CallToolResult(content=[text(message), *(text(e) for e in extra)], is_error=True)


def invocation_result(function: FunctionSpec, result: InvocationResult) -> types.CallToolResult:
    body = result.payload.decode("utf-8", errors="replace")
    if result.function_error is None:
        return types.CallToolResult(content=[text(body)], is_error=False)
    if result.error_type == "Sandbox.Timedout":
        return error_result(
            f"Timed out: {function.name} did not answer within its Timeout of {function.timeout} "
            f"second{'s' if function.timeout != 1 else ''}, and was stopped.",
            body,
        )
    return types.CallToolResult(content=[text(body)], is_error=True)


# -- the server -----------------------------------------------------------------------------------------


class ToolSet:
    """Tools from several providers (functions, sessions) behind one list/call pair."""

    def __init__(self, functions: FunctionTools, extra: Any | None = None) -> None:
        self.functions = functions
        self.extra = extra  # an object with tools(), input_schema(name), owns(name) and async call(name, arguments)

    def tools(self) -> list[types.Tool]:
        return [*(self.extra.tools() if self.extra is not None else []), *self.functions.tools()]

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        if self.extra is not None and self.extra.owns(name):
            return cast(Mapping[str, Any] | None, self.extra.input_schema(name))
        return self.functions.input_schema(name)

    async def call(self, name: str, arguments: Mapping[str, Any] | None) -> types.CallToolResult:
        if self.extra is not None and self.extra.owns(name):
            return cast(types.CallToolResult, await self.extra.call(name, arguments))
        return await self.functions.call(name, arguments)


def build_server(service: Any, *, sessions: SessionBackend | None = None) -> Server[Any]:
    """The MCP server of a Service: its functions (and, given a session manager, session tools) as tools."""
    extra = SessionTools(sessions) if sessions is not None else None
    toolset = ToolSet(FunctionTools(service, reserved=extra.names if extra is not None else frozenset()), extra)

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=toolset.tools())

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        return await toolset.call(params.name, params.arguments)

    _quiet_sdk_logs()
    return Server(
        SERVER_NAME,
        version=__version__,
        instructions=_INSTRUCTIONS,
        get_tool_input_schema=toolset.input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _quiet_sdk_logs() -> None:
    """The SDK logs each HTTP session at info level, as plain lines: only its warnings, unless we debug."""
    sdk = logging.getLogger("mcp")
    if logging.getLogger().level > logging.DEBUG:
        sdk.setLevel(logging.WARNING)


# -- streamable HTTP (`serve`) ----------------------------------------------------------------------------


def http_manager(service: Any, *, host: str, sessions: SessionBackend | None = None) -> StreamableHTTPSessionManager:
    """The streamable HTTP session manager for `/mcp`: run it (`.run()`) for as long as the app serves."""
    security = None
    if host in ("127.0.0.1", "localhost", "::1"):
        # As the SDK's own app does on loopback: no DNS rebinding, so a web page cannot drive the tools.
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    return StreamableHTTPSessionManager(
        app=build_server(service, sessions=sessions),
        security_settings=security,
        max_request_body_size=2 * MAX_REQUEST_BYTES,  # a 6 MB event in its JSON-RPC envelope
    )


# -- stdio (`sandbox-runtime mcp`) ------------------------------------------------------------------------


def run_stdio(service: Any) -> int:
    """Serve MCP on standard input/output until EOF, SIGTERM or SIGINT, then stop every sandbox. 0 when done."""
    return asyncio.run(_serve_stdio(service))


async def _serve_stdio(service: Any) -> int:
    loop = asyncio.get_running_loop()
    serving = asyncio.current_task()
    assert serving is not None
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:  # a second signal must not interrupt the shutdown (sandboxes would be left)
            stopped = True
            serving.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await service.start()
        server = build_server(service, sessions=sessions_of(service))
        async with _stdio_wire() as (stdin, stdout), stdio_server(stdin=stdin, stdout=stdout) as (read, write):
            log.info("mcp.stdio_ready", functions=len(service.pools))
            await server.run(read, write, server.create_initialization_options())
    except asyncio.CancelledError:
        if not stopped:
            raise
        serving.uncancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await service.close()
    return 0


class _WireIn:
    """Standard input as the SDK's stdio transport reads it (`async for line in stdin`), read on the event
    loop so that a shutdown cancels it (the SDK's own reads block a thread until the next line)."""

    def __init__(self, reader: asyncio.StreamReader | None, file: Any = None) -> None:
        self._reader = reader
        self._file = file  # a regular file: plain reads never block

    def __aiter__(self) -> _WireIn:
        return self

    async def __anext__(self) -> str:
        if self._reader is not None:
            line = await self._reader.readline()
        else:
            line = self._file.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class _WireOut:
    """Standard output as the SDK's stdio transport writes it (`await write(text)`, `await flush()`)."""

    def __init__(self, writer: asyncio.StreamWriter | None, fd: int) -> None:
        self._writer = writer
        self._fd = fd

    async def write(self, data: str) -> None:
        encoded = data.encode()
        if self._writer is not None:
            self._writer.write(encoded)
            await self._writer.drain()
        else:
            view = memoryview(encoded)
            while view:
                view = view[os.write(self._fd, view) :]

    async def flush(self) -> None:
        return None


@contextlib.asynccontextmanager
async def _stdio_wire() -> AsyncIterator[tuple[Any, Any]]:
    """Claim fds 0 and 1 for the protocol, as the SDK's stdio transport does: the wire moves to private
    descriptors, fd 0 becomes /dev/null and fd 1 stderr, so nothing else in the process (a stray print, a
    library) can write into the protocol stream or steal its input."""
    loop = asyncio.get_running_loop()
    wire_in = _dup_private(0)
    wire_out = _dup_private(1)
    _divert(0, os.devnull, os.O_RDONLY)
    try:
        os.dup2(2, 1)
    except OSError:
        _divert(1, os.devnull, os.O_WRONLY)
    in_file = os.fdopen(wire_in, "rb", buffering=0)
    out_file = os.fdopen(wire_out, "wb", buffering=0)
    stream = asyncio.StreamReader(limit=_STDIO_LINE_LIMIT)
    reader: asyncio.StreamReader | None = stream
    in_transport = out_transport = None
    try:
        in_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), in_file)
    except ValueError:  # a regular file (`< requests.jsonl`): not pollable, and never blocks
        reader = None
    writer: asyncio.StreamWriter | None = None
    try:
        out_transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, out_file)
        writer = asyncio.StreamWriter(out_transport, protocol, None, loop)
    except ValueError:
        writer = None
    try:
        yield (
            cast(anyio.AsyncFile[str], _WireIn(reader, io.BufferedReader(in_file) if reader is None else None)),
            cast(anyio.AsyncFile[str], _WireOut(writer, wire_out)),
        )
    finally:
        for transport in (in_transport, out_transport):
            if transport is not None:
                transport.close()
        with contextlib.suppress(OSError):
            in_file.close()
        with contextlib.suppress(OSError):
            out_file.close()
        sys.stdout.flush()


def _dup_private(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


def _divert(fd: int, path: str, flags: int) -> None:
    target = os.open(path, flags)
    try:
        os.dup2(target, fd)
    finally:
        os.close(target)
