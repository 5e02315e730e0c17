"""Rich values through msgpack (exact, both directions) and their natural JSON form."""

from __future__ import annotations

import collections
import enum
import math
import re
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple

import msgpack
import msgspec
import numpy as np
import pytest

from servicewire import values
from servicewire.errors import BadRequest
from servicewire.values import packb, to_natural_json, unpackb

ODD_OFFSET = timezone(timedelta(hours=5, minutes=30, seconds=15, microseconds=123))
WEST = timezone(-timedelta(hours=8))
AN_UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def assert_same(out: Any, expected: Any) -> None:
    """Equal in type and value, recursively; nan equals nan, -0.0 keeps its sign."""
    assert type(out) is type(expected), (out, expected)
    if isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(out)
        else:
            assert out == expected and math.copysign(1, out) == math.copysign(1, expected)
    elif isinstance(expected, complex):
        assert_same(out.real, expected.real)
        assert_same(out.imag, expected.imag)
    elif isinstance(expected, Decimal):
        assert out.as_tuple() == expected.as_tuple()
        assert str(out) == str(expected)
    elif isinstance(expected, datetime | time):
        assert out.replace(tzinfo=None) == expected.replace(tzinfo=None)
        assert out.utcoffset() == expected.utcoffset()
    elif isinstance(expected, list | tuple):
        assert len(out) == len(expected)
        for out_item, expected_item in zip(out, expected, strict=True):
            assert_same(out_item, expected_item)
    elif isinstance(expected, dict):
        assert set(out) == set(expected)
        for key, value in expected.items():
            out_key = next(k for k in out if k == key)
            assert_same(out_key, key)
            assert_same(out[key], value)
    elif isinstance(expected, np.ndarray):
        assert out.dtype.str == expected.dtype.str
        assert out.shape == expected.shape
        np.testing.assert_array_equal(out, expected)
    else:
        assert out == expected


ROWS: list[tuple[str, Any]] = [
    ("none", None),
    ("true", True),
    ("false", False),
    ("zero", 0),
    ("int64-min", -(2**63)),
    ("uint64-max", 2**64 - 1),
    ("below-int64", -(2**63) - 1),
    ("2**64", 2**64),
    ("-2**64", -(2**64)),
    ("2**1000", 2**1000),
    ("-2**1000", -(2**1000)),
    ("float", 1.5),
    ("negative-zero", -0.0),
    ("nan", math.nan),
    ("inf", math.inf),
    ("-inf", -math.inf),
    ("str-empty", ""),
    ("str-unicode", "héllo ✓ 𝄞"),
    ("bytes-empty", b""),
    ("bytes", b"\x00\xff\x80"),
    ("list-empty", []),
    ("list", [1, "a", None]),
    ("tuple-empty", ()),
    ("tuple-one", (1,)),
    ("tuple-nested", ((1, 2), [3, (4,)])),
    ("dict-empty", {}),
    ("dict-odd-keys", {(1, "a"): 1, frozenset({2}): 2, 3: 3, b"k": 4, 1.5: 5, None: 6}),
    ("set-empty", set()),
    ("set", {1, "b", (2, 3)}),
    ("frozenset-empty", frozenset()),
    ("frozenset", frozenset({1, frozenset({2})})),
    ("datetime-naive", datetime(2024, 5, 1, 12, 30, 0, 1)),
    ("datetime-utc", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
    ("datetime-odd-offset", datetime(2024, 5, 1, 12, 30, 5, 999999, tzinfo=ODD_OFFSET)),
    ("datetime-west", datetime(1969, 12, 31, 23, 59, tzinfo=WEST)),
    ("date", date(2024, 2, 29)),
    ("time-naive", time(23, 59, 59, 999999)),
    ("time-aware", time(1, 2, 3, tzinfo=ODD_OFFSET)),
    ("timedelta-zero", timedelta()),
    ("timedelta-negative", timedelta(days=-3, seconds=5, microseconds=7)),
    ("timedelta-max", timedelta.max),
    ("timedelta-min", timedelta.min),
    ("decimal-trailing-zeros", Decimal("1.20")),
    ("decimal-negative-zero", Decimal("-0")),
    ("decimal-exponent", Decimal("1E+5")),
    ("decimal-long", Decimal("-123456789012345678901234567890.000000001")),
    ("decimal-nan", Decimal("NaN")),
    ("decimal-snan", Decimal("-sNaN12")),
    ("decimal-infinity", Decimal("-Infinity")),
    ("uuid", AN_UUID),
    ("complex", 1.5 - 2j),
    ("complex-nan-inf", complex(math.nan, math.inf)),
]


@pytest.mark.parametrize("value", [v for _, v in ROWS], ids=[i for i, _ in ROWS])
def test_every_value_round_trips_exactly_through_msgpack(value: Any) -> None:
    assert_same(unpackb(packb(value)), value)


@pytest.mark.parametrize("value", [v for _, v in ROWS], ids=[i for i, _ in ROWS])
def test_every_value_round_trips_inside_containers(value: Any) -> None:
    wrapped = {"list": [value], "tuple": (value, value), "dict": {"k": value}}
    assert_same(unpackb(packb(wrapped)), wrapped)


def test_nested_mixture_round_trips() -> None:
    value = {
        (1, "a"): {Decimal("1.10"), Decimal("-2E+3")},
        frozenset({(1, 2)}): [(date(2024, 1, 1), {AN_UUID}), {"x": (1 + 1j,)}],
        "deep": ((((2**200,),),),),
    }
    assert_same(unpackb(packb(value)), value)


def test_big_int_payload_is_signed_big_endian_twos_complement() -> None:
    encoded = packb(2**64)
    ext = msgpack.unpackb(encoded)
    assert ext == msgpack.ExtType(values.EXT_BIG_INT, b"\x01" + b"\x00" * 8)
    assert msgpack.unpackb(packb(-(2**64))).data == b"\xff" + b"\x00" * 8


def test_payloads_are_plain_enough_for_other_languages() -> None:
    def ext(value: Any) -> msgpack.ExtType:
        return msgpack.unpackb(packb(value))

    assert ext(datetime(2024, 5, 1, 12, 30, tzinfo=ODD_OFFSET)) == msgpack.ExtType(
        values.EXT_DATETIME, b"2024-05-01T12:30:00+05:30:15.000123"
    )
    assert ext(Decimal("1.20")) == msgpack.ExtType(values.EXT_DECIMAL, b"1.20")
    assert ext(AN_UUID) == msgpack.ExtType(values.EXT_UUID, AN_UUID.bytes)
    assert msgpack.unpackb(ext(timedelta(days=-1, seconds=1)).data) == [-1, 1, 0]
    assert msgpack.unpackb(ext((1, 2)).data) == [1, 2]
    header = msgpack.unpackb(ext(np.arange(3, dtype="<i2")).data)
    assert header == ["<i2", [3], "C", b"\x00\x00\x01\x00\x02\x00"]


class Color(enum.IntEnum):
    RED = 1


class Flavor(enum.StrEnum):
    SWEET = "sweet"


class Point(NamedTuple):
    x: int
    y: int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Color.RED, 1),
        (Flavor.SWEET, "sweet"),
        (collections.OrderedDict(a=1), {"a": 1}),
        (Point(1, 2), (1, 2)),
        (bytearray(b"ab"), b"ab"),
        (memoryview(b"ab"), b"ab"),
        (np.str_("text"), "text"),
    ],
    ids=[
        "int-enum",
        "str-enum",
        "ordered-dict",
        "named-tuple",
        "bytearray",
        "memoryview",
        "np-str",
    ],
)
def test_subclasses_travel_as_their_base_value(value: Any, expected: Any) -> None:
    assert_same(unpackb(packb(value)), expected)


class Opaque:
    pass


class Plain(enum.Enum):
    A = 1


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Opaque(), "Opaque"),
        (Plain.A, "Plain"),
        (np.array([object()]), "dtype object"),
        (np.array(["a"]), "dtype <U1"),
        (np.zeros(2, dtype=[("a", "<i4")]), "dtype [('a', '<i4')]"),
        (np.datetime64("2024-01-01"), "datetime64"),
    ],
    ids=["object", "plain-enum", "object-array", "string-array", "structured-array", "datetime64"],
)
def test_unsupported_values_raise_type_error_naming_the_type(value: Any, type_name: str) -> None:
    with pytest.raises(TypeError, match=re.escape(type_name)):
        packb([value])


# -- numpy -------------------------------------------------------------------

DTYPES = ["?", "i1", "u2", "<i8", ">i4", "<f2", "<f4", "<f8", ">f8", "<c8", "<c16"]
SHAPES = [(), (0,), (3, 0), (5,), (2, 3), (2, 3, 4)]


def _sample(dtype: str, shape: tuple[int, ...], order: str) -> np.ndarray[Any, Any]:
    size = math.prod(shape)
    flat = (np.arange(size) % 7 - 3).astype(dtype)
    if np.dtype(dtype).kind == "c":
        flat = flat + 1j * flat[::-1]
    return np.asarray(flat.reshape(shape, order=order), order=order)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)) or "0d")
@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_round_trip_with_dtype_shape_and_order(
    dtype: str, shape: tuple[int, ...], order: str
) -> None:
    array = _sample(dtype, shape, order)
    buffer = bytearray(packb({"a": array}))
    out = unpackb(buffer)["a"]
    assert_same(out, array)
    assert out.flags.c_contiguous == array.flags.c_contiguous
    assert out.flags.f_contiguous == array.flags.f_contiguous
    if array.nbytes:
        # Zero copy: the array is a view into the received buffer.
        assert np.shares_memory(out, np.frombuffer(buffer, dtype=np.uint8))
        assert out.flags.writeable


def test_array_from_bytes_is_a_read_only_view() -> None:
    body = packb(np.arange(4.0))
    out = unpackb(body)
    assert not out.flags.writeable
    assert np.shares_memory(out, np.frombuffer(body, dtype=np.uint8))


def test_array_inside_a_tuple_is_still_a_view_into_the_body() -> None:
    buffer = bytearray(packb((np.arange(4.0), {np.arange(2)[0].item()})))
    out = unpackb(buffer)[0]
    assert np.shares_memory(out, np.frombuffer(buffer, dtype=np.uint8))
    out[0] = 42.0
    assert np.frombuffer(buffer, dtype=np.uint8).tobytes().count(np.float64(42).tobytes()) == 1


def test_non_contiguous_views_are_copied_to_c_order() -> None:
    base = np.arange(24.0).reshape(4, 6)
    view = base[::2, 1::2]
    out = unpackb(packb(view))
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, view)


@pytest.mark.parametrize(
    "scalar",
    [
        np.float32(1.5),
        np.float16(-2.5),
        np.float64(0.1),
        np.int8(-5),
        np.uint64(2**64 - 1),
        np.bool_(True),
        np.complex64(1 - 2j),
    ],
    ids=lambda s: type(s).__name__,
)
def test_numpy_scalars_come_back_as_the_same_numpy_type(scalar: np.generic) -> None:
    out = unpackb(packb([scalar]))[0]
    assert type(out) is type(scalar)
    assert out == scalar


def test_without_numpy_arrays_are_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    body = packb(np.arange(3))
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(
        BadRequest, match=r"numpy is not installed \(pip install servicewire\[numpy\]\)"
    ):
        unpackb(body)


# -- malformed payloads --------------------------------------------------------


def _ext(code: int, payload: bytes) -> bytes:
    return msgpack.packb(msgpack.ExtType(code, payload))


def _array(dtype: str, shape: list[int], order: str, data: bytes) -> bytes:
    return _ext(values.EXT_NDARRAY, msgpack.packb([dtype, shape, order, data]))


BAD_PAYLOADS = [
    ("unknown-code", _ext(99, b""), "unknown msgpack extension type 99"),
    ("object-dtype", _array("|O", [1], "C", b"\x00" * 8), "does not travel"),
    ("void-dtype", _array("|V8", [1], "C", b"\x00" * 8), "does not travel"),
    ("structured-dtype", _array("[('a','<i4')]", [1], "C", b"\x00" * 4), "does not travel"),
    ("string-dtype", _array("<U1", [1], "C", b"\x00" * 4), "does not travel"),
    ("array-too-short", _array("<f8", [2], "C", b"\x00" * 8), "needs 16 bytes, got 8"),
    ("array-negative-shape", _array("<f8", [-1], "C", b""), "negative"),
    ("array-bad-order", _array("<f8", [1], "K", b"\x00" * 8), "order"),
    ("array-not-a-header", _ext(values.EXT_NDARRAY, b"\x01"), "numpy.ndarray"),
    (
        "scalar-wrong-size",
        _ext(values.EXT_NUMPY_SCALAR, msgpack.packb(["<f8", b"\x00"])),
        "8 bytes",
    ),
    ("uuid-short", _ext(values.EXT_UUID, b"\x00" * 15), "UUID"),
    ("complex-short", _ext(values.EXT_COMPLEX, b"\x00" * 15), "complex"),
    ("datetime-garbage", _ext(values.EXT_DATETIME, b"yesterday"), "datetime"),
    ("datetime-bad-utf8", _ext(values.EXT_DATETIME, b"\xff"), "datetime"),
    ("date-garbage", _ext(values.EXT_DATE, b"2024-13-01"), "date"),
    ("time-garbage", _ext(values.EXT_TIME, b"25:00"), "time"),
    ("decimal-garbage", _ext(values.EXT_DECIMAL, b"1.2.3"), "Decimal"),
    ("timedelta-overflow", _ext(values.EXT_TIMEDELTA, msgpack.packb([10**10, 0, 0])), "timedelta"),
    ("timedelta-not-ints", _ext(values.EXT_TIMEDELTA, msgpack.packb(["1", 0, 0])), "timedelta"),
    ("set-unhashable", _ext(values.EXT_SET, msgpack.packb([[1]])), "set"),
    ("tuple-not-array", _ext(values.EXT_TUPLE, msgpack.packb({"a": 1})), "tuple"),
    ("tuple-truncated", _ext(values.EXT_TUPLE, b"\x92\x01"), "tuple"),
]


@pytest.mark.parametrize(
    ("body", "message"), [(b, m) for _, b, m in BAD_PAYLOADS], ids=[i for i, _, _ in BAD_PAYLOADS]
)
def test_malformed_extension_payloads_raise_bad_request(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        unpackb(body)
    assert message in caught.value.message


def test_msgpack_timestamp_from_other_languages_reads_as_aware_utc() -> None:
    body = msgpack.packb(datetime(2024, 1, 1, tzinfo=UTC), datetime=True)
    assert_same(unpackb(body), datetime(2024, 1, 1, tzinfo=UTC))


# -- natural JSON ---------------------------------------------------------------

NATURAL = [
    ("none", None, None),
    ("big-int", 2**100, 2**100),
    ("nan-is-null", math.nan, None),
    ("inf-is-null", math.inf, None),
    ("bytes-base64", b"\x00\xff", "AP8="),
    ("tuple", (1, (2,)), [1, [2]]),
    ("set", {3}, [3]),
    ("frozenset", frozenset({"a"}), ["a"]),
    ("dict-int-keys", {1: "a"}, {"1": "a"}),
    ("datetime-offset", datetime(2024, 5, 1, 12, 30, tzinfo=WEST), "2024-05-01T12:30:00-08:00"),
    ("datetime-naive", datetime(2024, 5, 1, 12, 30), "2024-05-01T12:30:00"),
    ("datetime-utc", datetime(2024, 5, 1, tzinfo=UTC), "2024-05-01T00:00:00Z"),
    ("date", date(2024, 2, 29), "2024-02-29"),
    ("time", time(1, 2, 3, 4), "01:02:03.000004"),
    ("timedelta", timedelta(days=1, seconds=2), "P1DT2S"),
    ("timedelta-negative", timedelta(seconds=-90), "-PT90S"),
    ("decimal", Decimal("1.20"), "1.20"),
    ("uuid", AN_UUID, str(AN_UUID)),
    ("complex", 1.5 - 2j, [1.5, -2.0]),
    ("int-enum", Color.RED, 1),
    ("array-2d", np.arange(6).reshape(2, 3), [[0, 1, 2], [3, 4, 5]]),
    ("array-fortran", np.asfortranarray(np.arange(6).reshape(2, 3)), [[0, 1, 2], [3, 4, 5]]),
    ("array-0d", np.array(2.5), 2.5),
    ("array-bool", np.array([True, False]), [True, False]),
    ("array-complex", np.array([1 + 2j]), [[1.0, 2.0]]),
    ("array-float16", np.array([0.5], dtype="<f2"), [0.5]),
    ("np-float32", np.float32(1.5), 1.5),
    ("np-int64", np.int64(-3), -3),
    ("np-bool", np.bool_(False), False),
    ("np-complex", np.complex128(1j), [0.0, 1.0]),
    ("np-str", np.str_("x"), "x"),
]


@pytest.mark.parametrize(
    ("value", "expected"), [(v, e) for _, v, e in NATURAL], ids=[i for i, _, _ in NATURAL]
)
def test_natural_json_form(value: Any, expected: Any) -> None:
    encoded = msgspec.json.encode(value, enc_hook=to_natural_json)
    decoded = msgspec.json.decode(encoded)
    assert decoded == expected
    assert type(decoded) is type(expected)


@pytest.mark.parametrize(
    "value",
    [Opaque(), np.array(["a"]), np.datetime64("2024-01-01")],
    ids=["object", "string-array", "datetime64"],
)
def test_natural_json_refuses_what_it_cannot_write(value: Any) -> None:
    with pytest.raises(TypeError, match="JSON"):
        to_natural_json(value)
