"""The rich values servicewire carries, as msgpack extension types and as natural JSON.

msgpack carries every value below exactly, type and value, in both directions.
The extension type codes and their payloads are part of wire protocol v1 and
never change; every payload is simple enough to read from any language.

====  ==============  ==============================================================
code  Python type     payload
====  ==============  ==============================================================
1     int             an int outside msgpack's native range [-2**63, 2**64): signed
                      big-endian two's complement, shortest form
2     tuple           a msgpack array of the items
3     set             a msgpack array of the items
4     frozenset       a msgpack array of the items
5     datetime        UTF-8 ISO 8601, ``datetime.isoformat()``; an offset (kept to
                      the microsecond) when aware, none when naive
6     date            UTF-8 ISO 8601, ``"2024-05-01"``
7     time            UTF-8 ISO 8601, ``"12:30:00.000001+05:30"``; offset as for 5
8     timedelta       a msgpack array of three ints ``[days, seconds, microseconds]``,
                      normalised as Python does (0 <= seconds < 86400,
                      0 <= microseconds < 10**6; only days is negative)
9     Decimal         UTF-8 ``str(d)``: sign, digits, exponent, NaN and Infinity kept
10    UUID            the 16 bytes of the UUID, big-endian (``UUID.bytes``)
11    complex         16 bytes: real then imaginary part, little-endian IEEE 754 float64
12    numpy.ndarray   a msgpack array ``[dtype, shape, order, data]``: dtype is numpy's
                      type string (``"<f8"``, ``">i4"``, ``"|b1"``), shape an array of
                      ints, order ``"C"`` or ``"F"``, data a bin of the raw elements
                      in that order
13    numpy scalar    a msgpack array ``[dtype, data]``, as for 12 with one element
14    numpy.ndarray   as 12, with the data byte-shuffled: the first byte of every
      (shuffled)      element, then the second byte of every element, and so on;
                      written only to a peer that asked for it, when compressing
====  ==============  ==============================================================

Items inside 2, 3, 4 and 12 follow these same rules, so a tuple of sets of
Decimals travels exactly. Only bool and numeric dtypes travel (``biufc``).
The msgpack timestamp extension (-1) that other languages write for dates is
read as an aware UTC datetime; servicewire never writes it. ``bytearray`` and
``memoryview`` travel as bytes, and a datetime's ``tzinfo`` as its fixed offset.

Decoded arrays are zero copy: they are views into the received buffer,
writable when that buffer was a ``bytearray``. numpy is optional and imported
only when an array is met.

In JSON, values take their natural form so that any language can use them
(:func:`to_natural_json`).
"""

from __future__ import annotations

import math
import re
import struct
import sys
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import msgpack
import msgspec

from servicewire.errors import BadRequest

if TYPE_CHECKING:
    import numpy

__all__ = [
    "EXT_BIG_INT",
    "EXT_COMPLEX",
    "EXT_DATE",
    "EXT_DATETIME",
    "EXT_DECIMAL",
    "EXT_FROZENSET",
    "EXT_NDARRAY",
    "EXT_NUMPY_SCALAR",
    "EXT_SET",
    "EXT_SHUFFLED_NDARRAY",
    "EXT_TIME",
    "EXT_TIMEDELTA",
    "EXT_TUPLE",
    "EXT_UUID",
    "from_msgpack_ext",
    "ndarray_parts",
    "packb",
    "shuffled",
    "to_msgpack_ext",
    "to_natural_json",
    "unpackb",
]

EXT_BIG_INT: Final = 1
EXT_TUPLE: Final = 2
EXT_SET: Final = 3
EXT_FROZENSET: Final = 4
EXT_DATETIME: Final = 5
EXT_DATE: Final = 6
EXT_TIME: Final = 7
EXT_TIMEDELTA: Final = 8
EXT_DECIMAL: Final = 9
EXT_UUID: Final = 10
EXT_COMPLEX: Final = 11
EXT_NDARRAY: Final = 12
EXT_NUMPY_SCALAR: Final = 13
EXT_SHUFFLED_NDARRAY: Final = 14

_NATIVE_INT_MIN: Final = -(2**63)
_NATIVE_INT_END: Final = 2**64
_NUMERIC_KINDS: Final = "biufc"
# Checked before numpy parses the string: np.dtype() also reads structured
# and object specifications, which must never come off the wire.
_DTYPE_PATTERN: Final = re.compile(r"[<>|=]?[biufc][0-9]{1,2}")
_COMPLEX: Final = struct.Struct("<dd")
_NO_NUMPY: Final = (
    "this program cannot decode numpy arrays: numpy is not installed "
    "(pip install servicewire[numpy])"
)


def packb(value: Any) -> bytes:
    """Encode ``value`` as msgpack with servicewire's extension types.

    Raises ``TypeError`` naming the type of a value msgpack cannot carry.
    """
    # A Packer per call: msgpack.Packer is not thread-safe, a new one costs
    # about half a microsecond, and a shared one would keep its largest
    # buffer alive forever.
    return msgpack.packb(  # type: ignore[no-any-return]
        value, default=to_msgpack_ext, strict_types=True, use_bin_type=True, datetime=False
    )


def unpackb(data: bytes | bytearray | memoryview) -> Any:
    """Decode msgpack written by :func:`packb`, without any limits.

    Arrays are views into ``data``. Errors are msgspec's or
    :class:`~servicewire.errors.BadRequest`; ``servicewire.codecs`` turns
    them all into ``BadRequest`` and enforces limits.
    """
    return _DECODER.decode(data)


def to_msgpack_ext(obj: object) -> object:
    """Turn a value msgpack has no native form for into an ``ExtType``.

    Used as ``default=`` of a ``msgpack.Packer(strict_types=True,
    use_bin_type=True, datetime=False)``. Subclasses of native types
    (``IntEnum``, ``StrEnum``, ``OrderedDict``, named tuples) are returned as
    their base value, which the packer then writes; a named tuple becomes a
    tuple. Raises ``TypeError`` naming the type of anything else.
    """
    encode = _ENCODERS.get(type(obj))
    if encode is not None:
        return encode(obj)
    np = sys.modules.get("numpy")
    # Without numpy imported, no numpy value can exist, so numpy stays unloaded.
    if np is not None:
        if isinstance(obj, np.ndarray):
            return _encode_ndarray(obj)
        if isinstance(obj, np.generic) and obj.dtype.kind in _NUMERIC_KINDS:
            return _encode_numpy_scalar(obj)
    return _base_value(obj)


def from_msgpack_ext(code: int, data: memoryview) -> Any:
    """Rebuild the value of one extension type; msgspec's ``ext_hook``.

    ``data`` is a view into the received buffer. Raises
    :class:`~servicewire.errors.BadRequest` for an unknown code or a payload
    that does not hold what its code says.
    """
    decode = _DECODERS.get(code)
    if decode is None:
        raise BadRequest(f"unknown msgpack extension type {code}")
    try:
        return decode(data)
    except (BadRequest, RecursionError, MemoryError):
        # Too deep or too big is the whole body's fault; the codec says so.
        raise
    except Exception as exc:
        # The payload is untrusted: whatever it makes the parsers raise is a
        # malformed body, never a server fault.
        name = _EXT_NAMES[code]
        raise BadRequest(f"malformed msgpack extension type {code} ({name}): {exc}") from None


def to_natural_json(obj: Any) -> Any:
    """Give the natural JSON form of a value msgspec's JSON encoder lacks.

    Used as ``enc_hook`` of ``msgspec.json.Encoder``. msgspec itself writes
    datetimes, dates, times as ISO 8601, timedeltas as ISO 8601 durations,
    Decimals and UUIDs as strings, bytes as base64, tuples and sets as arrays.
    This adds: complex -> ``[real, imag]``, numpy arrays -> nested lists,
    numpy scalars -> numbers or booleans. Raises ``TypeError`` otherwise.

    RFC 3339 offsets have minute precision, and msgspec drops the seconds of
    an offset like a historical ``+00:19:32``: such datetimes keep their exact
    instant only in msgpack.

    >>> import msgspec
    >>> msgspec.json.encode({"z": 1 + 2j}, enc_hook=to_natural_json)
    b'{"z":[1.0,2.0]}'
    """
    if isinstance(obj, complex):
        return [obj.real, obj.imag]
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray | np.generic):
        if obj.dtype.kind in _NUMERIC_KINDS:
            # msgspec calls this hook again for the complex numbers tolist() holds.
            return obj.tolist()
        if isinstance(obj, np.ndarray):
            raise TypeError(f"cannot encode a numpy array of dtype {obj.dtype} as JSON")
    # Subclasses msgspec does not know (numpy.str_, say) go as their base value.
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, int):
        return int.__int__(obj)
    if isinstance(obj, float):
        return float.__float__(obj)
    raise TypeError(f"cannot encode a value of type {_type_name(obj)} as JSON")


def _type_name(obj: object) -> str:
    cls = type(obj)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _base_value(obj: object) -> object:
    """The value of a subclass of a native type, as that native type."""
    if isinstance(obj, int):
        return _encode_int(int.__int__(obj))
    if isinstance(obj, float):
        return float.__float__(obj)
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, bytes):
        return bytes(obj)
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, tuple):
        return _encode_items(EXT_TUPLE, obj)
    if isinstance(obj, frozenset):
        return _encode_items(EXT_FROZENSET, obj)
    if isinstance(obj, set):
        return _encode_items(EXT_SET, obj)
    # datetime before date: a datetime is a date.
    for base in (datetime, date, time, timedelta, Decimal, uuid.UUID, complex):
        if isinstance(obj, base):
            return _ENCODERS[base](obj)
    raise TypeError(f"servicewire cannot encode a value of type {_type_name(obj)} in msgpack")


def _encode_int(value: int) -> object:
    if _NATIVE_INT_MIN <= value < _NATIVE_INT_END:
        return value
    # One extra bit for the sign, rounded up to whole bytes.
    size = (value.bit_length() + 8) // 8
    return msgpack.ExtType(EXT_BIG_INT, value.to_bytes(size, "big", signed=True))


def _encode_items(code: int, items: tuple[Any, ...] | set[Any] | frozenset[Any]) -> msgpack.ExtType:
    return msgpack.ExtType(code, packb(list(items)))


def _encode_timedelta(value: timedelta) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_TIMEDELTA, packb([value.days, value.seconds, value.microseconds]))


def ndarray_parts(array: numpy.ndarray[Any, Any]) -> tuple[list[Any], memoryview]:
    """The payload of extension type 12 in two parts: ``[dtype, shape, order]``
    and the elements' bytes, a view of the array's memory whenever it is
    contiguous. ``TypeError`` for a dtype that does not travel.
    """
    dtype = array.dtype
    if dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(
            f"cannot encode a numpy array of dtype {dtype}: only bool and numeric dtypes travel"
        )
    if array.flags.c_contiguous:
        order, data = "C", array
    elif array.flags.f_contiguous:
        # The transpose of a Fortran-ordered array is C-ordered over the same
        # memory, so its bytes are sent as they lie.
        order, data = "F", array.T
    else:
        order, data = "C", array.copy(order="C")
    # Flat unsigned bytes: len() of the view is its size in bytes, whatever the dtype.
    raw = data.reshape(-1).view("u1").data
    return [dtype.str, list(array.shape), order], raw


def _encode_ndarray(array: numpy.ndarray[Any, Any]) -> msgpack.ExtType:
    header, raw = ndarray_parts(array)
    return msgpack.ExtType(EXT_NDARRAY, msgpack.packb([*header, raw], use_bin_type=True))


def _encode_numpy_scalar(scalar: numpy.generic) -> msgpack.ExtType:
    payload = [scalar.dtype.str, scalar.tobytes()]
    return msgpack.ExtType(EXT_NUMPY_SCALAR, msgpack.packb(payload, use_bin_type=True))


_ENCODERS: Final[dict[type, Callable[[Any], object]]] = {
    int: _encode_int,
    tuple: lambda value: _encode_items(EXT_TUPLE, value),
    set: lambda value: _encode_items(EXT_SET, value),
    frozenset: lambda value: _encode_items(EXT_FROZENSET, value),
    datetime: lambda value: msgpack.ExtType(EXT_DATETIME, value.isoformat().encode()),
    date: lambda value: msgpack.ExtType(EXT_DATE, value.isoformat().encode()),
    time: lambda value: msgpack.ExtType(EXT_TIME, value.isoformat().encode()),
    timedelta: _encode_timedelta,
    Decimal: lambda value: msgpack.ExtType(EXT_DECIMAL, str(value).encode()),
    uuid.UUID: lambda value: msgpack.ExtType(EXT_UUID, value.bytes),
    complex: lambda value: msgpack.ExtType(EXT_COMPLEX, _COMPLEX.pack(value.real, value.imag)),
}


# Decoders are built once; msgspec decoders are thread-safe and reentrant, so
# the extension hook can use them for payloads nested inside a body.
_DECODER: Final = msgspec.msgpack.Decoder(ext_hook=from_msgpack_ext)
_ITEMS_PAYLOAD: Final = msgspec.msgpack.Decoder(list[Any], ext_hook=from_msgpack_ext)
_TIMEDELTA_PAYLOAD: Final = msgspec.msgpack.Decoder(tuple[int, int, int])
_ARRAY_PAYLOAD: Final = msgspec.msgpack.Decoder(tuple[str, tuple[int, ...], str, memoryview])
_SCALAR_PAYLOAD: Final = msgspec.msgpack.Decoder(tuple[str, memoryview])


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise BadRequest(_NO_NUMPY) from None
    return numpy


def _numeric_dtype(np: Any, spec: str) -> numpy.dtype[Any]:
    if not _DTYPE_PATTERN.fullmatch(spec):
        raise BadRequest(f"numpy dtype {spec!r} does not travel: only bool and numeric dtypes do")
    return np.dtype(spec)  # type: ignore[no-any-return]


def shuffled(raw: memoryview, itemsize: int) -> memoryview:
    """The bytes of ``raw`` (elements of ``itemsize`` bytes) byte-shuffled, a copy.

    Byte ``j`` of element ``i`` goes to ``j * n + i``: the bytes that vary
    slowly (a float's sign and exponent) end up next to each other, which
    compressors exploit. Extension type 14 carries arrays written this way.
    """
    np = _numpy()
    elements = np.frombuffer(raw, dtype=np.uint8).reshape(-1, itemsize)
    return np.ascontiguousarray(elements.T).reshape(-1).data  # type: ignore[no-any-return]


def _decode_shuffled_ndarray(data: memoryview) -> numpy.ndarray[Any, Any]:
    np = _numpy()
    spec, shape, order, raw = _ARRAY_PAYLOAD.decode(data)
    itemsize = _numeric_dtype(np, spec).itemsize
    if itemsize > 0 and raw.nbytes % itemsize == 0:
        planes = np.frombuffer(raw, dtype=np.uint8).reshape(itemsize, -1)
        # Unshuffled into new memory: the one copy a compressed body costs anyway.
        raw = np.ascontiguousarray(planes.T).reshape(-1).data
    return _array(np, spec, shape, order, raw)


def _decode_ndarray(data: memoryview) -> numpy.ndarray[Any, Any]:
    np = _numpy()
    spec, shape, order, raw = _ARRAY_PAYLOAD.decode(data)
    return _array(np, spec, shape, order, raw)


def _array(
    np: Any, spec: str, shape: tuple[int, ...], order: str, raw: memoryview
) -> numpy.ndarray[Any, Any]:
    dtype = _numeric_dtype(np, spec)
    if order not in ("C", "F"):
        raise BadRequest(f"numpy array order {order!r} is neither 'C' nor 'F'")
    if any(size < 0 for size in shape):
        raise BadRequest(f"numpy array shape {list(shape)} has a negative size")
    if math.prod(shape) * dtype.itemsize != raw.nbytes:
        raise BadRequest(
            f"numpy array of shape {list(shape)} and dtype {spec} needs "
            f"{math.prod(shape) * dtype.itemsize} bytes, got {raw.nbytes}"
        )
    # frombuffer makes a view, not a copy: the array lives in the body's buffer.
    flat = np.frombuffer(raw, dtype=dtype)
    if order == "F":
        return flat.reshape(shape[::-1]).T  # type: ignore[no-any-return]
    return flat.reshape(shape)  # type: ignore[no-any-return]


def _decode_numpy_scalar(data: memoryview) -> numpy.generic:
    np = _numpy()
    spec, raw = _SCALAR_PAYLOAD.decode(data)
    dtype = _numeric_dtype(np, spec)
    if raw.nbytes != dtype.itemsize:
        raise BadRequest(f"numpy scalar of dtype {spec} needs {dtype.itemsize} bytes")
    return np.frombuffer(raw, dtype=dtype)[0]  # type: ignore[no-any-return]


def _decode_set(data: memoryview) -> set[Any]:
    return set(_ITEMS_PAYLOAD.decode(data))


def _decode_timedelta(data: memoryview) -> timedelta:
    days, seconds, microseconds = _TIMEDELTA_PAYLOAD.decode(data)
    return timedelta(days=days, seconds=seconds, microseconds=microseconds)


def _decode_uuid(data: memoryview) -> uuid.UUID:
    return uuid.UUID(bytes=bytes(data))


def _decode_complex(data: memoryview) -> complex:
    return complex(*_COMPLEX.unpack(data))


def _text(data: memoryview) -> str:
    return str(data, "utf-8")


_DECODERS: Final[dict[int, Callable[[memoryview], Any]]] = {
    EXT_BIG_INT: lambda data: int.from_bytes(data, "big", signed=True),
    EXT_TUPLE: lambda data: tuple(_ITEMS_PAYLOAD.decode(data)),
    EXT_SET: _decode_set,
    EXT_FROZENSET: lambda data: frozenset(_ITEMS_PAYLOAD.decode(data)),
    EXT_DATETIME: lambda data: datetime.fromisoformat(_text(data)),
    EXT_DATE: lambda data: date.fromisoformat(_text(data)),
    EXT_TIME: lambda data: time.fromisoformat(_text(data)),
    EXT_TIMEDELTA: _decode_timedelta,
    EXT_DECIMAL: lambda data: Decimal(_text(data)),
    EXT_UUID: _decode_uuid,
    EXT_COMPLEX: _decode_complex,
    EXT_NDARRAY: _decode_ndarray,
    EXT_NUMPY_SCALAR: _decode_numpy_scalar,
    EXT_SHUFFLED_NDARRAY: _decode_shuffled_ndarray,
}

_EXT_NAMES: Final = {
    EXT_BIG_INT: "int",
    EXT_TUPLE: "tuple",
    EXT_SET: "set",
    EXT_FROZENSET: "frozenset",
    EXT_DATETIME: "datetime",
    EXT_DATE: "date",
    EXT_TIME: "time",
    EXT_TIMEDELTA: "timedelta",
    EXT_DECIMAL: "Decimal",
    EXT_UUID: "UUID",
    EXT_COMPLEX: "complex",
    EXT_NDARRAY: "numpy.ndarray",
    EXT_NUMPY_SCALAR: "numpy scalar",
    EXT_SHUFFLED_NDARRAY: "shuffled numpy.ndarray",
}
