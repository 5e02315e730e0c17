"""The codecs: round trips, every kind of bad body, the limits, and negotiation."""

from __future__ import annotations

import math
import random
import struct
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgpack
import numpy as np
import pytest

from servicewire import errors
from servicewire.codecs import (
    CODECS,
    DEFAULT_LIMITS,
    JSON,
    MSGPACK,
    PICKLE,
    Codec,
    Limits,
    check_limits,
    codec_for_content_type,
    negotiate,
)
from servicewire.errors import BadRequest, PayloadTooLarge, ServiceError
from servicewire.values import EXT_TUPLE

RICH = {
    "ints": [0, -1, 2**64, -(2**100)],
    (1, "key"): {Decimal("1.10"), Decimal("-2E+3")},
    "when": datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=-3))),
    "day": date(2024, 2, 29),
    "array": np.arange(12, dtype="<f4").reshape(3, 4),
    "pair": (1 + 2j, frozenset({b"x"})),
    "nan": math.nan,
}


def test_codecs_are_registered_by_name_with_canonical_content_types() -> None:
    assert CODECS == {"json": JSON, "msgpack": MSGPACK}
    assert JSON.content_type == "application/json"
    assert MSGPACK.content_type == "application/msgpack"
    assert Limits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_body_bytes == 256 * 2**20


def test_msgpack_round_trips_a_rich_message_exactly() -> None:
    out = MSGPACK.decode(MSGPACK.encode(RICH))
    assert out.keys() == RICH.keys()
    assert out[(1, "key")] == RICH[(1, "key")]
    assert out["when"].utcoffset() == timedelta(hours=-3)
    assert type(out["pair"]) is tuple and type(out["pair"][1]) is frozenset
    assert out["array"].dtype == np.float32
    np.testing.assert_array_equal(out["array"], RICH["array"])
    assert math.isnan(out["nan"])


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda t: t.__name__)
def test_decode_takes_any_bytes_like(wrap: Any) -> None:
    assert MSGPACK.decode(wrap(MSGPACK.encode({"a": [1]}))) == {"a": [1]}
    assert JSON.decode(wrap(b'{"a": [1]}')) == {"a": [1]}


def test_json_decodes_natural_values_without_conversion() -> None:
    assert JSON.decode(
        b'{"when": "2024-01-01T00:00:00Z", "n": 1.5, "big": 12345678901234567890123}'
    ) == {
        "when": "2024-01-01T00:00:00Z",
        "n": 1.5,
        "big": 12345678901234567890123,
    }


def test_json_encodes_rich_values_naturally_and_nan_as_null() -> None:
    value = {"t": (1, 2), "z": 1j, "a": np.eye(2, dtype=bool), "nan": math.nan, "d": Decimal("1.0")}
    assert JSON.decode(JSON.encode(value)) == {
        "t": [1, 2],
        "z": [0.0, 1.0],
        "a": [[True, False], [False, True]],
        "nan": None,
        "d": "1.0",
    }


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=lambda c: c.name)
def test_encoding_an_unsupported_value_raises_type_error(codec: Codec) -> None:
    with pytest.raises(TypeError, match="object"):
        codec.encode({"x": object()})


def test_json_refuses_tuple_keys_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match="cannot encode as JSON"):
        JSON.encode({(1, 2): 3})


# -- bad bodies -------------------------------------------------------------------


def _nested_tuples_body(depth: int) -> bytes:
    """``depth`` tuples inside each other, built without packing each level."""
    inner_size = 1  # msgpack nil
    headers = []
    for _ in range(depth):
        payload_size = 1 + inner_size  # fixarray(1) header, then the inner value
        headers.append(b"\xc9" + struct.pack(">I", payload_size) + bytes([EXT_TUPLE]) + b"\x91")
        inner_size = 6 + payload_size
    return b"".join(reversed(headers)) + b"\xc0"


def test_nested_tuple_builder_is_right() -> None:
    assert MSGPACK.decode(_nested_tuples_body(3)) == (((None,),),)


BAD_BODIES = [
    ("msgpack-empty", MSGPACK, b"", "truncated"),
    ("json-empty", JSON, b"", "truncated"),
    ("msgpack-trailing-garbage", MSGPACK, b"\x01\x02", "trailing characters"),
    ("json-trailing-garbage", JSON, b"{} x", "trailing characters"),
    ("json-invalid", JSON, b"{'a': 1}", "malformed"),
    ("msgpack-reserved-byte", MSGPACK, b"\xc1", "malformed"),
    ("msgpack-huge-array-header", MSGPACK, b"\xdd\xff\xff\xff\xff", "truncated"),
    ("msgpack-huge-map-header", MSGPACK, b"\xdf\xff\xff\xff\xff", "truncated"),
    ("msgpack-huge-bin-header", MSGPACK, b"\xc6\xff\xff\xff\xff", "truncated"),
    ("msgpack-invalid-utf8", MSGPACK, b"\xa2\xff\xfe", "utf-8"),
    ("json-invalid-utf8", JSON, b'"\xff\xfe"', "utf-8"),
    ("json-nested-100000", JSON, b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    ("msgpack-nested-100000", MSGPACK, b"\x91" * 100_000 + b"\xc0", "nests too deeply"),
    ("msgpack-tuples-nested-100000", MSGPACK, _nested_tuples_body(100_000), "nests too deeply"),
    ("msgpack-unknown-ext", MSGPACK, msgpack.packb(msgpack.ExtType(77, b"")), "extension type 77"),
    ("json-number-out-of-range", JSON, b"1e400", "out of range"),
]


@pytest.mark.parametrize(
    ("codec", "body", "message"),
    [(c, b, m) for _, c, b, m in BAD_BODIES],
    ids=[i for i, _, _, _ in BAD_BODIES],
)
def test_bad_bodies_raise_bad_request_with_a_clear_message(
    codec: Codec, body: bytes, message: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        codec.decode(body)
    # Case aside: the wording comes from msgspec, whose releases capitalise differently.
    assert message.lower() in caught.value.message.lower()
    assert "Traceback" not in caught.value.message
    assert caught.value.status == 400


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=lambda c: c.name)
def test_random_bytes_raise_bad_request(codec: Codec) -> None:
    rng = random.Random(20240501)
    for _ in range(300):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(2, 200)))
        with pytest.raises(BadRequest):
            codec.decode(body)


def test_msgpack_truncated_at_every_cut_point_raises_bad_request() -> None:
    body = MSGPACK.encode(RICH)
    for cut in range(len(body)):
        with pytest.raises(BadRequest):
            MSGPACK.decode(body[:cut])


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=lambda c: c.name)
def test_body_over_the_size_bound_is_payload_too_large(codec: Codec) -> None:
    body = codec.encode(["x" * 100])
    limits = Limits(max_body_bytes=len(body) - 1)
    with pytest.raises(PayloadTooLarge, match=f"exceeds the limit of {len(body) - 1} bytes"):
        codec.decode(body, limits)
    assert codec.decode(body, Limits(max_body_bytes=len(body))) == ["x" * 100]


# -- limits -----------------------------------------------------------------------


def _nested_lists(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


def _nested_dicts(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = {"k": value}
    return value


def _nested_tuples_value(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = (value,)
    return value


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=lambda c: c.name)
@pytest.mark.parametrize("nest", [_nested_lists, _nested_dicts], ids=["lists", "dicts"])
def test_nesting_is_bounded_at_max_depth(codec: Codec, nest: Any) -> None:
    assert codec.decode(codec.encode(nest(64))) == nest(64)
    with pytest.raises(BadRequest, match="nesting deeper than 64 levels"):
        codec.decode(codec.encode(nest(65)))


def test_nesting_counts_tuples_and_sets() -> None:
    assert MSGPACK.decode(MSGPACK.encode(_nested_tuples_value(64))) == _nested_tuples_value(64)
    with pytest.raises(BadRequest, match="nesting deeper than 64 levels"):
        MSGPACK.decode(MSGPACK.encode(_nested_tuples_value(65)))
    deep_in_set = {frozenset({_nested_tuples_value(10)})}
    with pytest.raises(BadRequest, match="nesting deeper than 5 levels"):
        MSGPACK.decode(MSGPACK.encode(deep_in_set), Limits(max_depth=5))


LENGTH_CASES = [
    ("list-small", [0] * 6),
    ("list-large-floats", [0.5] * 100),
    ("dict", {str(i): i for i in range(6)}),
    ("set", set(range(6))),
    ("tuple-inside-list", [(1,) * 6]),
]


@pytest.mark.parametrize("value", [v for _, v in LENGTH_CASES], ids=[i for i, _ in LENGTH_CASES])
def test_collection_lengths_are_bounded(value: Any) -> None:
    limit = 5 if len(value) != 100 else 99
    with pytest.raises(BadRequest, match=f"items exceeds the limit of {limit} items"):
        MSGPACK.decode(MSGPACK.encode(value), Limits(max_length=limit))


INT_CASES = [
    ("top-level", 2**4096),
    ("negative", -(2**4096) - 1),
    ("in-a-long-mixed-list", [1.5, 1] * 25 + [2**5000]),
    ("in-a-long-int-list", [*range(50), 2**5000]),
    ("dict-key", {2**5000: 1}),
    ("in-a-tuple", (1, "a", 2**5000)),
]


@pytest.mark.parametrize("value", [v for _, v in INT_CASES], ids=[i for i, _ in INT_CASES])
def test_ints_over_the_bit_bound_are_refused(value: Any) -> None:
    with pytest.raises(BadRequest, match=r"bits exceeds the limit of 4096 bits"):
        MSGPACK.decode(MSGPACK.encode(value))


def test_int_at_the_bit_bound_passes_and_json_ints_are_bounded_too() -> None:
    assert MSGPACK.decode(MSGPACK.encode(2**4096 - 1)) == 2**4096 - 1
    with pytest.raises(BadRequest, match="4319 bits exceeds the limit of 4096 bits"):
        JSON.decode(b"[" + str(10**1300).encode() + b"]")
    with pytest.raises(BadRequest, match="65 bits exceeds the limit of 64 bits"):
        MSGPACK.decode(MSGPACK.encode([2**64]), Limits(max_int_bits=64))


STR_CASES = [
    ("top-level", "x" * 11),
    ("in-a-long-mixed-list", ["a", 1] * 25 + ["x" * 11]),
    ("in-a-long-str-list", ["a"] * 50 + ["x" * 11]),
    ("dict-key", {"x" * 11: 1}),
    ("dict-value", {"k": "x" * 11}),
    ("in-a-set", {("x" * 11,)}),
]


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=lambda c: c.name)
@pytest.mark.parametrize("value", [v for _, v in STR_CASES], ids=[i for i, _ in STR_CASES])
def test_strings_over_the_length_bound_are_refused(codec: Codec, value: Any) -> None:
    with pytest.raises(BadRequest, match="11 characters exceeds the limit of 10 characters"):
        codec.decode(codec.encode(value), Limits(max_str_length=10))


def test_string_bound_counts_characters_of_escaped_json() -> None:
    body = b'"' + b"\\u00e9" * 11 + b'"'
    with pytest.raises(BadRequest, match="11 characters"):
        JSON.decode(body, Limits(max_str_length=10))
    assert JSON.decode(body, Limits(max_str_length=11)) == "é" * 11


def test_arrays_and_bytes_are_leaves_of_the_walk() -> None:
    limits = Limits(max_length=5, max_str_length=5)
    value = {"a": np.zeros(100), "b": b"x" * 100}
    out = MSGPACK.decode(MSGPACK.encode(value), limits)
    assert out["b"] == b"x" * 100


def test_check_limits_without_body_size_checks_strings() -> None:
    with pytest.raises(BadRequest, match="characters"):
        check_limits(["x" * 11], Limits(max_str_length=10))
    check_limits(["x" * 10], Limits(max_str_length=10))


# -- error envelopes ------------------------------------------------------------------

WIRE_ERRORS = [
    errors.BadRequest("bad"),
    errors.ValidationError("invalid", details={"a": "missing"}),
    errors.Unauthorized("who?"),
    errors.Forbidden("no"),
    errors.NotFound("none"),
    errors.MethodNotAllowed("GET"),
    errors.NotAcceptable("406"),
    errors.PayloadTooLarge("big"),
    errors.UnsupportedMediaType("text/plain"),
    errors.RateLimited("slow down", retry_after=3),
    errors.InternalError("oops"),
    ServiceError("custom", details={"missing": Decimal("12.50")}, type="Overdrawn", status=409),
]


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=lambda c: c.name)
@pytest.mark.parametrize("error", WIRE_ERRORS, ids=lambda e: e.type)
def test_error_envelopes_encode_in_both_codecs(codec: Codec, error: ServiceError) -> None:
    envelope = codec.decode(codec.encode_error(error))
    assert envelope["error"]["type"] == error.type
    assert envelope["error"]["message"] == error.message
    rebuilt = errors.error_from_wire(envelope, error.status)
    assert rebuilt.type == error.type


@pytest.mark.parametrize(
    ("codec", "details"),
    [(JSON, {(1, 2): "tuple key"}), (MSGPACK, object()), (JSON, object())],
    ids=["json-tuple-key", "msgpack-object", "json-object"],
)
def test_error_envelope_with_unencodable_details_still_encodes(codec: Codec, details: Any) -> None:
    error = errors.ValidationError("invalid", details=details)
    envelope = codec.decode(codec.encode_error(error))["error"]
    assert envelope["type"] == "ValidationError"
    assert envelope["message"] == "invalid"
    assert envelope["details"].startswith(f"details could not be encoded as {codec.name}")


# -- negotiation ------------------------------------------------------------------------

CONTENT_TYPES = [
    ("application/json", JSON),
    ("Application/JSON; charset=utf-8", JSON),
    ("application/problem+json", JSON),
    ("application/msgpack", MSGPACK),
    ("application/vnd.msgpack", MSGPACK),
    ("application/x-msgpack ; foo=bar", MSGPACK),
    ("text/plain", None),
    # Known by its media type; whether a caller may use it is the views' call.
    ("application/x-python-pickle", PICKLE),
    ("text/json+json", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(
    ("header", "codec"), CONTENT_TYPES, ids=[str(h) or "empty" for h, _ in CONTENT_TYPES]
)
def test_codec_for_content_type(header: str | None, codec: Codec | None) -> None:
    assert codec_for_content_type(header) is codec


ACCEPTS = [
    (None, MSGPACK, MSGPACK),
    ("", JSON, JSON),
    ("   ", MSGPACK, MSGPACK),
    ("*/*", MSGPACK, MSGPACK),
    ("application/*", JSON, JSON),
    ("application/json", MSGPACK, JSON),
    ("application/x-msgpack", JSON, MSGPACK),
    ("APPLICATION/VND.MSGPACK;q=0.5", JSON, MSGPACK),
    ("application/json, */*", MSGPACK, JSON),
    ("application/json;q=0.4, application/msgpack;q=0.6", JSON, MSGPACK),
    ("application/json;q=0.9, */*;q=0.1", MSGPACK, JSON),
    ("*/*, application/msgpack;q=0", MSGPACK, JSON),
    ("application/*;q=0.5, application/msgpack;q=0", JSON, JSON),
    ("application/json;q=0, application/msgpack;q=0", JSON, None),
    ("text/html", JSON, None),
    ("text/html, text/*;q=0.5", MSGPACK, None),
    ("text/html, application/problem+json", MSGPACK, JSON),
    ("application/json;q=abc", MSGPACK, None),
    ("application/json;q=2", MSGPACK, None),
    ("garbage, , ;;", JSON, None),
    ("application/msgpack;q=0.5, application/json;q=0.5", JSON, JSON),
]


@pytest.mark.parametrize(
    ("accept", "default", "expected"),
    ACCEPTS,
    ids=[f"{a!r}-default-{d.name}" for a, d, _ in ACCEPTS],
)
def test_negotiate(accept: str | None, default: Codec, expected: Codec | None) -> None:
    assert negotiate(accept, default) is expected


def test_negotiate_only_among_available_codecs() -> None:
    assert negotiate("application/json, */*;q=0.1", MSGPACK, available=[MSGPACK]) is MSGPACK
    assert negotiate("application/json", MSGPACK, available=[MSGPACK]) is None
