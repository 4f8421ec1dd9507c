"""Finding the function's handler from `_HANDLER` (`module.function`), with awslambdaric's errors.

| Case                                    | errorType                     |
|-----------------------------------------|-------------------------------|
| no `.` in the name                      | Runtime.MalformedHandlerName  |
| first module component is built in      | Runtime.BuiltInModuleConflict |
| ImportError (also a missing dependency) | Runtime.ImportModuleError     |
| SyntaxError                             | Runtime.UserCodeSyntaxError   |
| no such attribute                       | Runtime.HandlerNotFound       |
| anything else raised by the import      | the exception's class name    |
"""

from __future__ import annotations

import importlib
import sys
import types

from .errors import (
    BUILT_IN_MODULE_CONFLICT,
    HANDLER_NOT_FOUND,
    IMPORT_MODULE_ERROR,
    MALFORMED_HANDLER_NAME,
    USER_CODE_SYNTAX_ERROR,
    FaultError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_CO_VARARGS = 0x04


class Handler:
    """The resolved handler, and whether it is called as `f(event, context)` or as `f(event)`."""

    __slots__ = ("function", "takes_context")

    def __init__(self, function: Callable[..., Any], takes_context: bool) -> None:
        self.function = function
        self.takes_context = takes_context


def load_handler(name: str) -> Handler:
    """Import the handler's module and find the handler; raises FaultError or what the import raised."""
    function = resolve_handler(name)
    return Handler(function, takes_context(function))


def resolve_handler(name: str) -> Callable[..., Any]:
    try:
        module_name, function_name = name.rsplit(".", 1)
    except ValueError as exc:
        raise FaultError(MALFORMED_HANDLER_NAME, f"Bad handler '{name}': {exc}") from None
    if module_name.split(".")[0] in sys.builtin_module_names:
        raise FaultError(BUILT_IN_MODULE_CONFLICT, f"Cannot use built-in module {module_name} as a handler module")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise FaultError(IMPORT_MODULE_ERROR, f"Unable to import module '{module_name}': {exc}") from None
    except SyntaxError as exc:
        trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        message = f"Syntax error in module '{module_name}': {exc}"
        raise FaultError(USER_CODE_SYNTAX_ERROR, message, trace) from None
    try:
        handler: Callable[..., Any] = getattr(module, function_name)
    except AttributeError:
        message = f"Handler '{function_name}' missing on module '{module_name}'"
        raise FaultError(HANDLER_NOT_FOUND, message) from None
    return handler


def takes_context(function: Callable[..., Any]) -> bool:
    """False only when the handler accepts exactly one positional argument and no `*args`.

    Same answer as `inspect.signature(function, follow_wrapped=False)`: a decorator's wrapper is
    judged by what the wrapper itself accepts. Plain functions and methods are read from their code
    object, which spares the cold start the import of `inspect`; anything else asks `inspect`, and a
    callable it cannot describe gets both arguments.
    """
    code, bound = _code_of(function)
    if code is not None:
        return code.co_argcount - bound != 1 or bool(code.co_flags & _CO_VARARGS)
    import inspect

    try:
        parameters = inspect.signature(function, follow_wrapped=False).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = 0
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional != 1


def _code_of(function: object) -> tuple[types.CodeType | None, int]:
    if getattr(function, "__signature__", None) is not None:
        return None, 0
    if type(function) is types.FunctionType:
        return function.__code__, 0
    if type(function) is types.MethodType:
        inner = function.__func__
        if type(inner) is types.FunctionType and getattr(inner, "__signature__", None) is None:
            return inner.__code__, 1
    return None, 0
