"""bootstrap.marshalling: events in, responses out, as awslambdaric marshals them."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bootstrap import marshalling
from bootstrap.errors import FaultError
from bootstrap.marshalling import JsonCodec, ensure_ascii_for

codec = JsonCodec()
unicode_codec = JsonCodec(ensure_ascii=False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "null"),
        ("x", '"x"'),
        (1, "1"),
        (True, "true"),
        (1.5, "1.5"),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        ({"a": [1, 2, {"b": None}]}, '{"a": [1, 2, {"b": null}]}'),
        ((1, 2), "[1, 2]"),
    ],
)
def test_plain_values(value: object, expected: str) -> None:
    assert codec.dumps(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("1.50"), "1.50"),
        (Decimal("-0"), "-0"),
        (Decimal("1E+3"), "1E+3"),
        (Decimal("NaN"), "NaN"),
        (Decimal("-NaN"), "NaN"),
        (Decimal("Infinity"), "Infinity"),
        (Decimal("-Infinity"), "-Infinity"),
        (Decimal("123456789012345678901234567890.000000001"), "123456789012345678901234567890.000000001"),
    ],
)
def test_decimal_is_written_raw(value: Decimal, expected: str) -> None:
    assert codec.dumps(value) == expected
    assert codec.dumps({"price": value}) == '{"price": ' + expected + "}"


def test_decimal_fallback_matches_the_standard_encoder_elsewhere() -> None:
    body = OrderedDict(
        [
            ("s", 'é\n"q"'),
            ("n", None),
            ("t", True),
            ("f", False),
            ("i", -12),
            ("x", 0.1),
            ("nan", math.nan),
            ("l", [1, (2, 3), [], {}]),
            (1, "int key"),
            (2.5, "float key"),
            (True, "bool key"),
            (None, "none key"),
            ("d", {"deep": [Decimal("0.10")]}),
        ]
    )
    expected_prefix = json.dumps({k: v for k, v in body.items() if k != "d"})[:-1]
    assert codec.dumps(body) == expected_prefix + ', "d": {"deep": [0.10]}}'
    assert unicode_codec.dumps(body).startswith('{"s": "é\\n\\"q\\""')


def test_int_and_float_subclasses_encode_like_their_base() -> None:
    class Flag(int):
        def __repr__(self) -> str:
            return "Flag!"

    assert codec.dumps([Flag(3), Decimal("1")]) == "[3, 1]"


def test_non_ascii_escaped_unless_python312_or_later() -> None:
    assert codec.dumps("é✓") == '"\\u00e9\\u2713"'
    assert unicode_codec.dumps("é✓") == '"é✓"'
    assert unicode_codec.dumps(["é", Decimal("1")]) == '["é", 1]'


@pytest.mark.parametrize(
    ("env", "ensure_ascii"),
    [
        (None, True),
        ("AWS_Lambda_python3.9", True),
        ("AWS_Lambda_python3.11", True),
        ("AWS_Lambda_python3.12", False),
        ("AWS_Lambda_python3.13", False),
        ("AWS_Lambda_python3.14", False),
        ("AWS_Lambda_python3.15", False),
        ("AWS_Lambda_Image", True),
    ],
)
def test_ensure_ascii_for(env: str | None, ensure_ascii: bool) -> None:
    assert ensure_ascii_for(env) is ensure_ascii


def test_marshal_response_json_and_bytes() -> None:
    assert unicode_codec.marshal_response({"a": "é"}) == ('{"a": "é"}'.encode(), "application/json")
    assert codec.marshal_response(None) == (b"null", "application/json")
    assert codec.marshal_response(b"\x00raw") == (b"\x00raw", "application/unknown")


def _marshal_error(value: object) -> FaultError:
    with pytest.raises(FaultError) as info:
        codec.marshal_response(value)
    assert info.value.error_type == "Runtime.MarshalError"
    return info.value


def test_nested_bytes_are_decoded_as_utf8_like_simplejson() -> None:
    assert codec.dumps({"body": "é".encode()}) == '{"body": "\\u00e9"}'
    assert codec.dumps({b"key": [b"v", Decimal("1.0")]}) == '{"key": ["v", 1.0]}'
    assert codec.dumps({b"key": 1}) == '{"key": 1}'
    fault = _marshal_error({"body": b"\xff"})
    assert fault.message == (
        "Unable to marshal response: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"
    )


def test_unserialisable_is_marshal_error() -> None:
    fault = _marshal_error({1, 2})
    assert fault.message == "Unable to marshal response: Object of type set is not JSON serializable"
    assert fault.payload("req") == {
        "errorMessage": "Unable to marshal response: Object of type set is not JSON serializable",
        "errorType": "Runtime.MarshalError",
        "requestId": "req",
        "stackTrace": [],
    }


def test_unserialisable_next_to_a_decimal_is_marshal_error() -> None:
    fault = _marshal_error([Decimal("1"), {"x": object()}])
    assert fault.message == "Unable to marshal response: Object of type object is not JSON serializable"


def test_bad_keys_are_marshal_errors() -> None:
    message = "Unable to marshal response: keys must be str, int, float, bool or None, not tuple"
    assert _marshal_error({(1, 2): 1}).message == message
    assert _marshal_error([Decimal(1), {(1, 2): 1}]).message == message


def test_circular_reference_is_marshal_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    assert _marshal_error(loop).message == "Unable to marshal response: Circular reference detected"
    loop.append(Decimal("1"))
    assert _marshal_error(loop).message == "Unable to marshal response: Circular reference detected"


def test_shared_but_acyclic_containers_are_fine() -> None:
    shared = [Decimal("2.0")]
    assert codec.dumps({"a": shared, "b": shared}) == '{"a": [2.0], "b": [2.0]}'


def test_unmarshal_json_only_for_exact_content_type() -> None:
    assert codec.unmarshal_event(b'{"a": 1.5, "b": NaN}', "application/json")["a"] == 1.5
    assert codec.unmarshal_event(b'{"a": 1}', "application/json; charset=utf-8") == b'{"a": 1}'
    assert codec.unmarshal_event(b"raw", "application/octet-stream") == b"raw"
    assert codec.unmarshal_event(b'{"a": 1}', None) == b'{"a": 1}'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "Unable to unmarshal input: Expecting value: line 1 column 1 (char 0)"),
        (
            b"{",
            "Unable to unmarshal input: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
    ],
)
def test_bad_json_event_is_unmarshal_error(body: bytes, message: str) -> None:
    with pytest.raises(FaultError) as info:
        codec.unmarshal_event(body, "application/json")
    assert info.value.error_type == "Runtime.UnmarshalError"
    assert info.value.message == message


def test_error_payload_with_lone_surrogate_stays_valid_utf8() -> None:
    body = unicode_codec.encode_error({"errorMessage": "bad \ud800", "errorType": "X"})
    assert json.loads(body) == {"errorMessage": "bad \ud800", "errorType": "X"}
    assert unicode_codec.encode_error({"errorMessage": "é"}) == '{"errorMessage": "é"}'.encode()


# -- the C code called directly: the same results as json.JSONEncoder.encode and json.loads ----------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES, st.booleans())
def test_encoding_matches_the_standard_encoder(value: object, ensure_ascii: bool) -> None:
    made = JsonCodec(ensure_ascii)
    assert made._made is not None  # the direct call is in use on this Python
    assert made.dumps(value) == json.JSONEncoder(ensure_ascii=ensure_ascii).encode(value)


def test_an_encoding_that_stopped_half_way_leaves_nothing_behind() -> None:
    value = {"a": [Decimal("1.50")]}  # the C encoder stops inside both containers; the slow path goes on
    assert codec.dumps(value) == codec.dumps(value) == '{"a": [1.50]}'
    loop: list[object] = []
    loop.append(loop)
    _marshal_error(loop)
    assert codec.dumps([loop[:0], value]) == '[[], {"a": [1.50]}]'


def test_a_python_without_the_c_encoder_encodes_through_json(monkeypatch) -> None:
    monkeypatch.setattr("json.encoder.c_make_encoder", None)  # as json.encoder sets it without _json
    other = JsonCodec()
    assert other._made is None
    assert other.dumps({"a": [1, Decimal("2.5")]}) == '{"a": [1, 2.5]}'


@given(JSON_VALUES.filter(lambda v: not isinstance(v, float) or v == v))
@example(1.5)
def test_decoding_matches_json_loads(value: object) -> None:
    body = json.dumps(value).encode()
    assert codec.unmarshal_event(body, "application/json") == json.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        b' {"a": 1}\n',  # whitespace around the value
        b'\xef\xbb\xbf{"a": "\xc3\xa9"}',  # a UTF-8 byte order mark
        '{"a": "é"}'.encode("utf-16"),  # another encoding json.loads detects
        '[1, "\u2603"]'.encode("utf-32-le"),
        b'"\xed\xa0\x80"',  # an encoded lone surrogate, which json.loads lets through
        b"1",
        b'"text"',
    ],
)
def test_events_outside_the_common_case_decode_as_json_loads_does(body: bytes) -> None:
    assert codec.unmarshal_event(body, "application/json") == json.loads(body)


@pytest.mark.parametrize("body", [b'{"a": 1} {"b": 2}', b"[1,", b"\x00", b'{"a": "\x00"}', b"nul"])
def test_invalid_events_get_json_loads_words(body: bytes) -> None:
    with pytest.raises(FaultError) as info:
        codec.unmarshal_event(body, "application/json")
    with pytest.raises(ValueError) as loads:
        json.loads(body)
    assert info.value.message == f"Unable to unmarshal input: {loads.value}"


def test_the_made_encoder_is_checked_against_encode_at_start() -> None:
    encoder = json.JSONEncoder(default=marshalling._default_fast)
    assert marshalling._made_encoder(encoder, json.encoder.encode_basestring_ascii, {}) is not None
    assert marshalling._made_encoder(encoder, lambda text: "?", {}) is None  # encodes differently: not used
