"""The warm-path floor: one bare Starlette POST echo route, served exactly as `serve` serves the service.

The route sits at the Invoke API's path so that the same clients (raw HTTP and boto3's `invoke`)
can drive the floor and the service alike. Run as `python -m bench.floor --port P`.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime_api.cli import SERVER_OPTIONS


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")


def create_app() -> Starlette:
    return Starlette(routes=[Route("/2015-03-31/functions/{function_name:path}/invocations", echo, methods=["POST"])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    config = uvicorn.Config(create_app(), host=args.host, port=args.port, **SERVER_OPTIONS)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
