"""AWS event-stream framing (`application/vnd.amazon.eventstream`), as InvokeWithResponseStream answers.

Each message is a 12-byte prelude (total length and headers length, both uint32 big-endian, then the
CRC32 of those 8 bytes), the headers (name length: 1 byte, name, value type 7 = string, value length:
uint16 big-endian, value), the payload, and the CRC32 of everything before it. botocore only decodes
these (`botocore.eventstream`), so the few lines that encode them live here; the tests decode what they
write with botocore.
"""

from __future__ import annotations

import struct
import zlib

import orjson

CONTENT_TYPE = "application/vnd.amazon.eventstream"

_STRING = 7


def _headers(pairs: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in pairs.items():
        raw_name, raw_value = name.encode(), value.encode()
        out += struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


_PAYLOAD_CHUNK = _headers(
    {":event-type": "PayloadChunk", ":content-type": "application/octet-stream", ":message-type": "event"}
)
_INVOKE_COMPLETE = _headers(
    {":event-type": "InvokeComplete", ":content-type": "application/json", ":message-type": "event"}
)


def message(headers: bytes, payload: bytes) -> bytes:
    """One message from encoded headers and a payload."""
    prelude = struct.pack(">II", 12 + len(headers) + len(payload) + 4, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    crc = zlib.crc32(payload, zlib.crc32(headers, zlib.crc32(prelude)))
    return b"".join((prelude, headers, payload, struct.pack(">I", crc)))


def payload_chunk(data: bytes) -> bytes:
    """`{"PayloadChunk": {"Payload": data}}` to boto3."""
    return message(_PAYLOAD_CHUNK, data)


def invoke_complete(
    error_code: str | None = None, error_details: str | None = None, log_result: str | None = None
) -> bytes:
    """`{"InvokeComplete": {...}}` to boto3: the last message, with the members that are set."""
    members = {"ErrorCode": error_code, "ErrorDetails": error_details, "LogResult": log_result}
    return message(_INVOKE_COMPLETE, orjson.dumps({key: value for key, value in members.items() if value is not None}))
