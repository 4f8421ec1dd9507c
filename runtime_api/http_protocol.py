"""The service's HTTP protocol: uvicorn's httptools protocol, with Invoke answered without ASGI.

Invoke is the route every warm invocation takes, and its answer waits on nothing but the function:
going through ASGI costs it a scope, a request/response cycle, a task that starts before the body
has arrived and then waits for it, middleware calls and two writes, which on the warm path is a
measurable share of the whole round trip (docs/performance.md). Here a small Invoke request (a
Content-Length body up to uvicorn's flow-control high-water mark, no Expect, not pipelined behind
another request) is kept whole as it arrives. Once it is complete it is started in the same parsing
callback (`InvokeFastPath.start`): checked, handed to its pool and, when a warm runtime waits in
/next, its event written, all before the loop takes anything else in. Its answer is written when
the result is set (`Invocation.on_result`), or from the future's callback for an error or a
cancellation: the same answer as the ASGI route, status line, headers and body in one write, with
the headers uvicorn would have written. What has to wait first (an Event, stored before its 202; a
function whose code is being reloaded) gets a task of its own, through `InvokeFastPath.answer_deferred`.

Everything else (other routes, large or chunked bodies, `Expect: 100-continue`, pipelined requests)
is uvicorn's own handling, unchanged: keep-alive, flow control, graceful shutdown and the
in-flight accounting that `shutdown.GracefulServer` waits on (uvicorn's tasks, and here the started
invocations' futures) work the same for both.
"""

from __future__ import annotations

import asyncio
import contextvars
import urllib.parse
from typing import TYPE_CHECKING, Any

import httptools
from starlette.responses import Response
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .invoke import Deferred, first_headers, invoke_path_function
from .logs import get_logger

if TYPE_CHECKING:
    from .app import InvokeFastPath
    from .invocation import Invocation

log = get_logger("http")


def protocol_for(app: InvokeFastPath) -> type[InvokeHttpProtocol]:
    """The protocol class to give uvicorn (`uvicorn.Config(http=...)`) for a service's app."""
    return type("InvokeHttpProtocol", (InvokeHttpProtocol,), {"invoke_app": app})


class _Pending:
    """An Invoke request taken off the ASGI path: the attributes uvicorn's protocol reads and sets on
    its current request (`cycle`), and what the answer needs."""

    __slots__ = ("body", "disconnected", "function_name", "headers", "keep_alive", "query", "response_complete")

    def __init__(self, function_name: str, query: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool):
        self.function_name = function_name
        self.query = query
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = bytearray()
        self.disconnected = False
        self.response_complete = False

    @property
    def message_event(self) -> _Pending:
        return self  # uvicorn wakes a cycle's reader with `cycle.message_event.set()`: nobody waits here

    def set(self) -> None:
        pass


class InvokeHttpProtocol(HttpToolsProtocol):
    invoke_app: InvokeFastPath  # set by `protocol_for`

    def on_headers_complete(self) -> None:
        pending = self._invoke_request()
        if pending is None:
            super().on_headers_complete()
            return
        self.cycle = pending  # type: ignore[assignment]

    def _invoke_request(self) -> _Pending | None:
        """The request as an Invoke to answer here, or None for uvicorn's ASGI handling."""
        parser = self.parser
        if parser.get_method() != b"POST" or self.expect_100_continue or parser.should_upgrade():
            return None
        if self.cycle is not None and not self.cycle.response_complete:
            return None  # pipelined behind a request still being answered: uvicorn queues it
        declared = None
        for name, value in self.headers:
            if name == b"content-length":
                if declared is not None:
                    return None
                declared = value
            elif name == b"transfer-encoding":
                return None
        if declared is None or not declared.isdigit() or int(declared) > HIGH_WATER_LIMIT:
            return None
        url = httptools.parse_url(self.url)
        path = url.path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        function_name = invoke_path_function(path)
        if function_name is None or self.root_path:
            return None
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        return _Pending(function_name, url.query or b"", self.headers, keep_alive)

    def on_body(self, body: bytes) -> None:
        pending = self.cycle
        if isinstance(pending, _Pending):
            pending.body += body  # at most the declared Content-Length, which is below the high-water mark
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        pending = self.cycle
        if not isinstance(pending, _Pending):
            super().on_message_complete()
            return
        # Started here, in this call: a warm invocation's event is on its way to the runtime before the
        # loop takes anything else in. The request id bound meanwhile stays with this request's context.
        context = contextvars.copy_context()
        context.run(self._start, pending, context)

    def _start(self, pending: _Pending, context: contextvars.Context) -> None:
        headers = first_headers(pending.headers)
        started = self.invoke_app.start(pending.function_name, pending.query, headers, bytes(pending.body))
        if isinstance(started, Deferred):  # it has to wait for something first: a task of its own
            self._track(self.loop.create_task(self._answer(pending, started)))
        elif isinstance(started, Response):  # after this parsing callback, as uvicorn would answer
            self.loop.call_soon(self._respond_with, pending, started, context=context)
        else:
            self._track(started.future)  # graceful shutdown waits for it, as for uvicorn's tasks
            started.on_result = lambda: context.run(self._finished, pending, started)  # answered at once
            started.future.add_done_callback(lambda _: self._finished(pending, started), context=context)

    def _track(self, task: asyncio.Future[Any]) -> None:
        task.add_done_callback(self.tasks.discard)  # type: ignore[arg-type]
        self.tasks.add(task)  # type: ignore[arg-type]

    def _finished(self, pending: _Pending, invocation: Invocation) -> None:
        """Answer a started invocation whose future is done (once: from its `on_result`, else from the
        future's callback, for an error or a cancellation)."""
        if pending.response_complete:
            return
        if invocation.future.cancelled():  # shutting down, past its deadline: the connection closes, as uvicorn's
            self.transport.close()
            return
        self._respond(pending, *self.invoke_app.finished(invocation))

    async def _answer(self, pending: _Pending, deferred: Deferred) -> None:
        try:
            response = await self.invoke_app.answer_deferred(deferred)
        except asyncio.CancelledError:  # shutting down, past its deadline: the connection closes, as uvicorn's
            self.transport.close()
            raise
        except Exception:
            log.exception("request.failed", function=pending.function_name)
            self.transport.close()
            return
        self._respond_with(pending, response)

    def _respond_with(self, pending: _Pending, response: Response) -> None:
        self._respond(pending, response.status_code, response.raw_headers, bytes(response.body))

    def _respond(self, pending: _Pending, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        try:
            if pending.disconnected or self.transport.is_closing():
                return
            content = [STATUS_LINE[status]]
            for name, value in (*self.server_state.default_headers, *headers):
                content += (name, b": ", value, b"\r\n")
            if not pending.keep_alive:  # a Connection: close request, or a graceful shutdown meanwhile
                content.append(b"connection: close\r\n")
            content += (b"\r\n", body)
            self.transport.write(b"".join(content))
        except Exception:
            log.exception("request.failed", function=pending.function_name)
            self.transport.close()
            return
        pending.response_complete = True
        if not pending.keep_alive:
            self.transport.close()
        self.on_response_complete()
