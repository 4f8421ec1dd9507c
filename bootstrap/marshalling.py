"""Events in, responses out: awslambdaric's JSON rules with the standard library's `json`.

- An event whose Content-Type is exactly `application/json` is parsed; any other type is handed to
  the function as raw bytes. An empty or invalid JSON body is a `Runtime.UnmarshalError`.
- A `bytes` result is posted raw as `application/unknown`; anything else as JSON, with bare
  `NaN`/`Infinity`, and a `decimal.Decimal` written as its own digits (`Decimal("1.50")` gives `1.50`,
  a NaN Decimal gives `NaN`). `bytes` inside the result (values or keys) are decoded as UTF-8, as
  simplejson does. Non-ASCII text is escaped unless the execution environment is python3.12 or
  later. A value JSON cannot represent is a `Runtime.MarshalError`.

The C encoder does all the work unless a Decimal (or a bytes key) turns up; only then is the value
encoded again by a small pure-Python encoder that can write raw numbers. `decimal` itself is never
imported here: a Decimal can only exist if the function imported it.

Both directions call the C code directly on a warm invoke: the encoder `json.JSONEncoder.encode`
would make anew for every value is made once (and checked against `encode` at start, falling back
to `encode` if this Python's differs), and an event that is UTF-8 text holding one JSON value from
its first character to its last is scanned in one call, without `json.loads`'s encoding detection
and whitespace handling in Python. Anything else goes through `json.loads`, which also words the
error. On a warm invoke this about halves the time the runtime spends on JSON (docs/performance.md).
"""

from __future__ import annotations

import json
import sys
from json.encoder import encode_basestring, encode_basestring_ascii

from .errors import MARSHAL_ERROR, UNMARSHAL_ERROR, FaultError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_UNICODE_OUTPUT_ENVS = frozenset(f"AWS_Lambda_python3.{minor}" for minor in (12, 13, 14, 15))
_INFINITY = float("inf")


def ensure_ascii_for(execution_env: str | None) -> bool:
    """awslambdaric writes raw UTF-8 only on the python3.12+ managed runtimes."""
    return execution_env not in _UNICODE_OUTPUT_ENVS


class _DecimalFound(Exception):
    """Raised out of the C encoder so that the value is encoded again by the pure-Python encoder."""


class JsonCodec:
    """Encodes responses and error payloads, decodes events."""

    def __init__(self, ensure_ascii: bool = True) -> None:
        self.ensure_ascii = ensure_ascii
        self._fast = json.JSONEncoder(ensure_ascii=ensure_ascii, allow_nan=True, default=_default_fast)
        self._string = encode_basestring_ascii if ensure_ascii else encode_basestring
        # The containers the made encoder is inside (circular references). Shared by every call: the
        # runtime's loop, this codec's only user, encodes one value at a time.
        self._markers: dict[int, Any] = {}
        self._made = _made_encoder(self._fast, self._string, self._markers)
        self._scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

    def dumps(self, obj: Any) -> str:
        """JSON text for `obj`; raises TypeError/ValueError like `json.dumps` for what it cannot encode."""
        try:
            if self._made is None:
                return self._fast.encode(obj)
            try:
                return "".join(self._made(obj, 0))
            except BaseException:
                self._markers.clear()  # what the encoder was inside when it stopped
                raise
        except (_DecimalFound, TypeError):  # a TypeError may be a bytes key, which only the slow path takes
            chunks: list[str] = []
            self._encode(obj, chunks, set())  # raises the same TypeError if `obj` has no JSON form
            return "".join(chunks)

    def unmarshal_event(self, body: bytes, content_type: str | None) -> Any:
        if content_type != "application/json":
            return body
        try:
            text = body.decode("utf-8")
            value, end = self._scan(text, 0)
            if end == len(text):
                return value
        except Exception:  # not the common case: json.loads decides, and words the error
            pass
        try:
            return json.loads(body)
        except Exception as exc:
            raise FaultError(UNMARSHAL_ERROR, f"Unable to unmarshal input: {exc}") from None

    def marshal_response(self, result: Any) -> tuple[bytes, str]:
        """The response body and its Content-Type."""
        if isinstance(result, bytes):
            return result, "application/unknown"
        try:
            return self.dumps(result).encode("utf-8"), "application/json"
        except Exception as exc:
            raise FaultError(MARSHAL_ERROR, f"Unable to marshal response: {exc}") from None

    def encode_error(self, payload: dict[str, Any]) -> bytes:
        """An error payload as UTF-8 JSON (escaped to ASCII if it holds text UTF-8 cannot carry)."""
        try:
            return self.dumps(payload).encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(payload).encode("ascii")

    def _encode(self, o: Any, out: list[str], markers: set[int]) -> None:
        # Same order of type checks as the standard library's encoder, plus Decimal.
        if isinstance(o, str):
            out.append(self._string(o))
        elif isinstance(o, bytes):
            out.append(self._string(o.decode("utf-8")))
        elif o is None:
            out.append("null")
        elif o is True:
            out.append("true")
        elif o is False:
            out.append("false")
        elif isinstance(o, int):
            out.append(int.__repr__(o))
        elif isinstance(o, float):
            out.append(_float_text(o))
        elif isinstance(o, (list, tuple)):
            _enter(o, markers)
            out.append("[")
            for index, item in enumerate(o):
                if index:
                    out.append(", ")
                self._encode(item, out, markers)
            out.append("]")
            markers.discard(id(o))
        elif isinstance(o, dict):
            _enter(o, markers)
            out.append("{")
            for index, (key, value) in enumerate(o.items()):
                if index:
                    out.append(", ")
                out.append(self._string(_key_text(key)))
                out.append(": ")
                self._encode(value, out, markers)
            out.append("}")
            markers.discard(id(o))
        elif _is_decimal(o):
            out.append("NaN" if o.is_nan() else str(o))
        else:
            raise _not_serializable(o)


def _made_encoder(encoder: json.JSONEncoder, string: Any, markers: dict[int, Any]) -> Any:
    """The C encoder `encoder.encode` makes for each value (json.encoder.JSONEncoder.iterencode), made
    once; None without one, or if this Python's takes other arguments or encodes differently."""
    try:
        from json.encoder import c_make_encoder  # type: ignore[attr-defined]

        made = c_make_encoder(
            markers, encoder.default, string, None, encoder.key_separator, encoder.item_separator,
            False, False, True,
        )  # fmt: skip
        sample = {"text": ["\u00e9\u2603\n", 1, -2.5, float("inf"), None, True, False], "": {}, "n": b"bytes"}
        if "".join(made(sample, 0)) == encoder.encode(sample) and not markers:
            return made
    except Exception:
        pass
    markers.clear()
    return None


def _default_fast(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.decode("utf-8")
    if _is_decimal(obj):
        raise _DecimalFound
    raise _not_serializable(obj)


def _is_decimal(obj: Any) -> bool:
    module = sys.modules.get("decimal")
    return module is not None and isinstance(obj, module.Decimal)


def _not_serializable(obj: Any) -> TypeError:
    return TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _enter(container: Any, markers: set[int]) -> None:
    if id(container) in markers:
        raise ValueError("Circular reference detected")
    markers.add(id(container))


def _float_text(value: float) -> str:
    if value != value:
        return "NaN"
    if value == _INFINITY:
        return "Infinity"
    if value == -_INFINITY:
        return "-Infinity"
    return float.__repr__(value)


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return key.decode("utf-8")
    if isinstance(key, float):
        return _float_text(key)
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
