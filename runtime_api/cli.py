"""`sandbox-runtime serve | invoke | mcp | build | generate-event` (also `python -m runtime_api ...`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from . import __version__, sample_events
from .config import ConfigError, Settings
from .functions import FunctionRegistry, FunctionSpec, parse_function_name
from .logs import configure_logging, get_logger

_COMMANDS = ("serve", "invoke", "mcp", "build", "generate-event")
# How the HTTP service is served (the benchmark's floor is served the same way).
SERVER_OPTIONS: dict[str, Any] = {
    "http": "httptools",
    "loop": "uvloop",
    "lifespan": "on",
    "access_log": False,
    "log_config": None,
    "server_header": False,
}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-t", "--template", type=Path, help="SAM template (default: $SANDBOX_TEMPLATE)")
    parser.add_argument(
        "--parameter-overrides",
        action="append",
        default=[],
        metavar="'KEY=VALUE ...'",
        help="template parameter values as SAM takes them: 'Stage=dev Size=2' or "
        "'ParameterKey=Stage,ParameterValue=dev'; repeatable",
    )
    parser.add_argument(
        "-n",
        "--env-vars",
        type=Path,
        metavar="JSON",
        help="environment variables for the functions, as sam takes them: "
        '{"Parameters": {...}} for all, {"LogicalIdOrName": {...}} for one (default: $SANDBOX_ENV_VARS)',
    )
    parser.add_argument(
        "--strict-runtimes",
        action="store_true",
        default=None,
        help="refuse python3.x functions whose exact interpreter is missing instead of using python3",
    )
    parser.add_argument(
        "--build-dir",
        type=Path,
        help="where `build` puts its output and serve/invoke look for it "
        "(default: $SANDBOX_BUILD_DIR, else .sandbox-runtime/build next to the template)",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="service log level")
    parser.add_argument("--log-format", choices=["auto", "json", "console"], help="service log format")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandbox-runtime", description="Run AWS Lambda functions locally, each in its own sandbox."
    )
    parser.add_argument("--version", action="version", version=f"sandbox-runtime {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the Lambda Invoke API for a SAM template (the default command)")
    _common(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000)")
    serve.add_argument("--pool-size", type=int, help="environments pre-started per function (default 2)")
    serve.add_argument(
        "--generic-pool-size", type=int, help="generic sandboxes kept ready per runtime for cold starts (default 2)"
    )
    serve.add_argument("--max-concurrency", type=int, help="environments per function at most (default 64)")
    serve.add_argument(
        "--no-hot-reload",
        dest="hot_reload",
        action="store_false",
        default=None,
        help="keep serving the template and code loaded at start when they change (default: $SANDBOX_HOT_RELOAD)",
    )
    invoke = sub.add_parser("invoke", help="invoke one function once, like `sam local invoke`")
    invoke.add_argument("function", help="function name or template logical id")
    _common(invoke)
    invoke.add_argument("-e", "--event", help="event JSON file, or - for standard input (default: {})")
    build = sub.add_parser(
        "build", help="install each Python function's requirements.txt next to a copy of its code, like `sam build`"
    )
    _common(build)
    build.add_argument("functions", nargs="*", metavar="FUNCTION", help="functions to build (default: all)")
    build.add_argument("--parallel", action="store_true", help="build functions side by side (one pip each)")
    build.add_argument("--force", action="store_true", help="rebuild even when a build is up to date")
    mcp = sub.add_parser(
        "mcp", help="serve the template's functions as MCP tools on standard input/output (no HTTP server)"
    )
    _common(mcp)
    mcp.add_argument("--pool-size", type=int, help="environments pre-started per function (default 0)")
    sample_events.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if sys.stderr is None:  # started with stderr closed (2>&-): logs go nowhere, results still out
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0] not in _COMMANDS and args_list[0] not in ("-h", "--help", "--version")):
        args_list.insert(0, "serve")
    args = build_parser().parse_args(args_list)
    if args.command == "generate-event":
        return sample_events.run(args)
    try:
        if args.command == "invoke":
            return _invoke(args)
        if args.command == "mcp":
            return _mcp(args)
        if args.command == "build":
            return _build(args)
        return _serve(args)
    except ConfigError as exc:
        print(f"sandbox-runtime: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        message = _startup_error(exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2


def _startup_error(exc: Exception) -> str | None:
    """What to print for an error that stops a command before it runs, or None for any other. The
    template loader (cfn-lint) and the service take about a second to import: each command reads its
    settings first, so that a configuration error is reported without waiting for them."""
    from .service import StartupError
    from .template import TemplateError

    if isinstance(exc, TemplateError):
        return f"sandbox-runtime: template error: {exc}"
    if isinstance(exc, StartupError):
        return f"sandbox-runtime: {exc}"
    return None


def _settings(args: argparse.Namespace, defaults: dict[str, Any] | None = None, **extra: Any) -> Settings:
    overrides = {
        "template": args.template,
        "env_vars": args.env_vars,
        "build_dir": args.build_dir,
        "strict_runtimes": args.strict_runtimes,
        "log_level": args.log_level,
        "log_format": args.log_format,
        **extra,
    }
    return Settings.load(overrides, defaults=defaults)


def _parameter_overrides(values: list[str]) -> dict[str, str]:
    from .template import TemplateError

    overrides = {}
    for item in (word for value in values for word in value.split()):
        if item.startswith("ParameterKey="):
            key_part, _, value_part = item.partition(",")
            if not value_part.startswith("ParameterValue="):
                raise TemplateError(f"--parameter-overrides: expected ParameterKey=K,ParameterValue=V, got {item!r}")
            key, value = key_part.removeprefix("ParameterKey="), value_part.removeprefix("ParameterValue=")
        else:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise TemplateError(f"--parameter-overrides expects KEY=VALUE, got {item!r}")
        overrides[key] = value
    return overrides


def _registry(settings: Settings, args: argparse.Namespace) -> FunctionRegistry:
    functions = _template_functions(settings, args)
    return FunctionRegistry(functions, region=settings.region, account_id=settings.account_id)


def _template_functions(settings: Settings, args: argparse.Namespace) -> list[FunctionSpec]:
    """The template's functions (with --env-vars applied), and warnings about what is left out. Raises
    TemplateError (and the env-vars file's errors) when they cannot be loaded."""
    from .env_vars import apply_env_vars, load_env_vars
    from .template import TemplateError, load_template

    if settings.template is None:
        raise TemplateError("no template given: pass --template PATH or set SANDBOX_TEMPLATE")
    env_vars = load_env_vars(settings.env_vars) if settings.env_vars is not None else None
    template = load_template(
        settings.template,
        parameter_overrides=_parameter_overrides(args.parameter_overrides),
        region=settings.region,
        account_id=settings.account_id,
    )
    log = get_logger("template")
    if template.skipped:
        # One line for the whole template; each resource again at debug level.
        log.warning(
            "template.skipped",
            resources=dict(template.skipped),
            detail=f"{len(template.skipped)} resource(s) not run locally: "
            + "; ".join(f"{logical_id} ({reason})" for logical_id, reason in template.skipped),
        )
        for logical_id, reason in template.skipped:
            log.debug("template.skipped_resource", resource=logical_id, reason=reason)
    left_out: dict[str, list[str]] = {}
    for function, layer, reason in template.skipped_layers:
        left_out.setdefault(function, []).append(f"{layer} ({reason})")
    for function, layers in left_out.items():
        log.warning(
            "function.layers_skipped",
            function=function,
            layers=layers,
            detail="only layers the template defines with local content are used; the function runs without these",
        )
    if env_vars is not None and (unmatched := env_vars.unmatched(template.functions)):
        log.warning(
            "env_vars.unmatched",
            file=str(env_vars.path),
            sections=unmatched,
            detail="these sections name no function of the template (nor Parameters): they apply to nothing",
        )
    return apply_env_vars(template.functions, env_vars)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        pool_size=args.pool_size,
        generic_pool_size=args.generic_pool_size,
        max_concurrency=args.max_concurrency,
        hot_reload=args.hot_reload,
    )
    import uvicorn

    from .app import create_app
    from .http_protocol import protocol_for
    from .service import Service
    from .shutdown import GracefulServer

    configure_logging(settings.log_level, settings.log_format)
    registry = _registry(settings, args)
    service = Service(settings, registry)
    service.preflight()
    service.prepare()
    # With hot reload, edits of the template itself are applied while serving (`template_reload`).
    reload_template = (lambda: _template_functions(settings, args)) if settings.hot_reload else None
    app = create_app(service, reload_template=reload_template)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        **{**SERVER_OPTIONS, "http": protocol_for(app)},
    )
    # SIGTERM/SIGINT: drain to the deadline (`shutdown`), then re-raise the signal under the handlers
    # found: these, so that a completed graceful shutdown exits 0 instead of "killed by SIGTERM".
    server = GracefulServer(config, app=app, service=service, timeout=settings.shutdown_timeout_seconds)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    server.run()
    return 0 if server.started else 1


def _build(args: argparse.Namespace) -> int:
    settings = _settings(args, defaults={"log_level": "warning"})
    from . import build

    configure_logging(settings.log_level, "console" if settings.log_format == "auto" else settings.log_format)
    registry = _registry(settings, args)
    assert settings.template is not None
    root = build.build_root(settings.build_dir, settings.template)
    assert root is not None
    return build.run(
        registry,
        root,
        template=settings.template,
        names=args.functions,
        parallel=args.parallel,
        force=args.force,
        strict_runtimes=settings.strict_runtimes,
    )


def _mcp(args: argparse.Namespace) -> int:
    """MCP over stdio (`mcp_server.run_stdio`): the service in-process, its logs and the functions' output on
    stderr; standard output carries the protocol only."""
    settings = _settings(args, defaults={"log_level": "warning", "pool_size": 0}, pool_size=args.pool_size)
    from . import mcp_server
    from .service import Service

    configure_logging(settings.log_level, "console" if settings.log_format == "auto" else settings.log_format)
    registry = _registry(settings, args)
    service = Service(settings, registry, log_sink=_stderr_sink)
    service.preflight()
    service.prepare()
    return mcp_server.run_stdio(service)


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _invoke(args: argparse.Namespace) -> int:
    settings = _settings(args, defaults={"log_level": "warning"}, pool_size=0)
    from .service import preflight

    fmt = "console" if settings.log_format == "auto" else settings.log_format  # stderr is for people here
    configure_logging(settings.log_level, fmt)
    registry = _registry(settings, args)
    preflight(bwrap=False)  # the service checks for bwrap once it knows which isolation the function needs
    ref = parse_function_name(args.function)
    function = registry.get(ref.name)
    if function is None:
        names = ", ".join(
            sorted(
                f"{f.name} ({f.logical_id})" if f.logical_id and f.logical_id != f.name else f.name for f in registry
            )
        )
        print(
            f"sandbox-runtime: function {args.function!r} is not in {settings.template} (functions: {names})",
            file=sys.stderr,
        )
        return 1
    if args.event == "-":
        payload = sys.stdin.buffer.read()
    elif args.event:
        try:
            payload = Path(args.event).read_bytes()
        except OSError as exc:
            print(f"sandbox-runtime: cannot read the event file {args.event}: {exc.strerror}", file=sys.stderr)
            return 2
    else:
        payload = b"{}"
    # Only the invoked function is prepared (staged, its runtime resolved), not the whole template.
    only = FunctionRegistry([function], region=settings.region, account_id=settings.account_id)
    return asyncio.run(_invoke_once(settings, only, function, payload))


def _stderr_sink(function: Any, request_id: str | None, line: str) -> None:
    # A closed stderr raises here; the environment's output handling absorbs that (the result still
    # goes to stdout).
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


async def _invoke_once(settings: Settings, registry: FunctionRegistry, function: Any, payload: bytes) -> int:
    from .errors import LambdaServiceError
    from .invocation import Invocation
    from .service import Service

    service = Service(settings, registry, log_sink=_stderr_sink)
    try:
        await service.start(warm_up=False)
        result = await service.invoke(Invocation(function=function, payload=payload.strip() or b"{}"))
    except LambdaServiceError as exc:
        print(f"sandbox-runtime: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await service.close()
    sys.stdout.buffer.write(result.payload + b"\n")
    sys.stdout.flush()
    return 0
