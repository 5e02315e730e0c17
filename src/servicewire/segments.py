"""msgpack bodies as segments: large buffers are referenced, never copied.

:func:`pack_segments` writes a value as :func:`servicewire.values.packb`
does, byte for byte, but as a list of segments: msgpack pieces, and a view of
the caller's memory for each large buffer (an ndarray's elements, a bytes
value of at least :data:`LARGE` bytes). A server sends the segments one after
the other and a client streams them, so a 1 GB array leaves without a copy
of its own; joined, they are the body any msgpack reader reads.

Only the containers on the way to a large buffer are written piece by piece;
every other subtree (all of a body without large buffers) goes to msgpack's
packer whole, at C speed.

The receiving side reads a body into one :func:`receive_buffer` and decodes
arrays as views of it.

Example::

    segments = pack_segments({"samples": numpy.zeros(10**6)})
    b"".join(segments) == packb({"samples": numpy.zeros(10**6)})   # True
"""

from __future__ import annotations

import struct
import sys
import uuid
import zlib
from collections.abc import Collection, Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final

import msgpack

from servicewire.values import (
    EXT_FROZENSET,
    EXT_NDARRAY,
    EXT_SET,
    EXT_SHUFFLED_NDARRAY,
    EXT_TUPLE,
    ndarray_parts,
    packb,
    shuffled,
    to_msgpack_ext,
)

__all__ = ["LARGE", "Segment", "body_size", "pack_segments", "receive_buffer", "shuffle_pays"]

#: Buffers of at least this many bytes are referenced rather than copied.
#: Below it, a copy costs less than a segment of its own.
LARGE: Final = 64 * 1024

Segment = bytes | memoryview

# Types that never hold a buffer: a container of only these goes to packb whole.
_SCALARS: Final = frozenset(
    {type(None), bool, int, float, str, complex, datetime, date, time, timedelta, Decimal}
    | {uuid.UUID}
)
_BUFFERS: Final = (bytes, bytearray, memoryview)
# msgpack's packer refuses deeper nesting; such a value goes to it whole, to be refused.
_MAX_DEPTH: Final = 512
# Huge pages are 2 MiB; below a few of them a bytearray is as fast.
_HUGE_BUFFER: Final = 8 * 2**20
_SHUFFLE_SAMPLE: Final = 64 * 1024
_SHUFFLE_GAIN: Final = 0.9
# Above this many items a container is scanned by item type first.
_SCAN_THRESHOLD: Final = 32


def pack_segments(value: Any, shuffle: bool = False) -> list[Segment]:
    """Encode ``value`` as :func:`~servicewire.values.packb` does, as segments.

    The segments are ``bytes`` and 1-dimensional unsigned-byte
    ``memoryview`` objects (so ``len()`` of each is its size); views refer to
    the memory of arrays and buffers inside ``value``, which must not change
    until the segments are sent. A value without a large buffer is one
    segment. Raises ``TypeError`` as ``packb`` does.

    With ``shuffle``, for a body about to be compressed and a reader that
    reads extension type 14: each large array whose bytes compress clearly
    better byte-shuffled (:func:`shuffle_pays`) is written shuffled, a copy.
    """
    if type(value) in _SCALARS or not _holds_large(value, 0):
        return [packb(value)]
    writer = _Writer(shuffle)
    writer.write(value, 0)
    return writer.segments()


def body_size(segments: Iterable[Segment]) -> int:
    """The size in bytes of the body the segments make."""
    return sum(map(len, segments))


def receive_buffer(size: int) -> bytearray | memoryview:
    """A zeroed, writable buffer of ``size`` bytes to read a body into.

    A large one is numpy's memory when numpy is loaded: numpy asks the kernel
    for huge pages, so filling 80 MB costs a few dozen page faults instead of
    twenty thousand (about 40 ms less here). Arrays decoded from either kind
    are writable views of it.
    """
    np = sys.modules.get("numpy")
    if np is None or size < _HUGE_BUFFER:
        return bytearray(size)
    return memoryview(np.zeros(size, dtype=np.uint8))


def _holds_large(value: Any, depth: int) -> bool:
    if isinstance(value, _BUFFERS):
        return memoryview(value).nbytes >= LARGE
    if isinstance(value, dict):
        return depth < _MAX_DEPTH and (
            _any_large(value.keys(), depth) or _any_large(value.values(), depth)
        )
    if isinstance(value, list | tuple | set | frozenset):
        return depth < _MAX_DEPTH and _any_large(value, depth)
    np = sys.modules.get("numpy")
    # Without numpy imported, no array can exist.
    return np is not None and isinstance(value, np.ndarray) and value.nbytes >= LARGE


def _any_large(items: Collection[Any], depth: int) -> bool:
    # One pass over the item types at C speed clears a homogeneous
    # container (a million floats) without a Python-level loop.
    if len(items) > _SCAN_THRESHOLD and _SCALARS.issuperset(map(type, items)):
        return False
    return any(type(item) not in _SCALARS and _holds_large(item, depth + 1) for item in items)


class _Writer:
    """Collects segments: small values through one packer, large buffers as views."""

    def __init__(self, shuffle: bool = False) -> None:
        self._shuffle = shuffle
        self._packer = msgpack.Packer(
            default=to_msgpack_ext,
            strict_types=True,
            use_bin_type=True,
            datetime=False,
            autoreset=False,
        )
        self._segments: list[Segment] = []

    def segments(self) -> list[Segment]:
        self._flush()
        return self._segments

    def write(self, value: Any, depth: int) -> None:
        if type(value) in _SCALARS or not _holds_large(value, depth):
            self._packer.pack(value)
        elif isinstance(value, _BUFFERS):
            self._buffer(value)
        # Subclasses are written as their base type, as values.to_msgpack_ext does.
        elif isinstance(value, dict):
            self._packer.pack_map_header(len(value))
            for key, item in value.items():
                self.write(key, depth + 1)
                self.write(item, depth + 1)
        elif isinstance(value, list):
            self._packer.pack_array_header(len(value))
            for item in value:
                self.write(item, depth + 1)
        elif isinstance(value, tuple):
            self._items(EXT_TUPLE, value, depth)
        elif isinstance(value, frozenset):
            self._items(EXT_FROZENSET, value, depth)
        elif isinstance(value, set):
            self._items(EXT_SET, value, depth)
        else:
            self._ndarray(value)

    def _flush(self) -> None:
        packed = self._packer.bytes()
        if packed:
            self._segments.append(packed)
            self._packer.reset()

    def _raw(self, *segments: Segment) -> None:
        self._flush()
        self._segments.extend(segments)

    def _buffer(self, value: bytes | bytearray | memoryview) -> None:
        view = memoryview(value)
        if view.format != "B" or view.ndim != 1:
            try:
                view = view.cast("B")
            except TypeError:
                # Not contiguous, or an exotic format: the packer decides, as packb would.
                self._packer.pack(value)
                return
        self._raw(_bin_header(len(view)), view)

    def _items(self, code: int, items: Collection[Any], depth: int) -> None:
        # The payload is the packb of a list of the items: its size goes first.
        inner = _Writer(self._shuffle)
        inner.write(list(items), depth)
        payload = inner.segments()
        self._raw(_ext_header(code, body_size(payload)), *payload)

    def _ndarray(self, array: Any) -> None:
        header, raw = ndarray_parts(array)
        code = EXT_NDARRAY
        if self._shuffle and shuffle_pays(raw, array.dtype.itemsize):
            code, raw = EXT_SHUFFLED_NDARRAY, shuffled(raw, array.dtype.itemsize)
        # A four-item array: the first three items, then the elements as bin.
        head = b"\x94" + msgpack.packb(header, use_bin_type=True)[1:] + _bin_header(len(raw))
        self._raw(_ext_header(code, len(head) + len(raw)), head, raw)


def shuffle_pays(raw: memoryview, itemsize: int) -> bool:
    """Whether an array's bytes compress clearly better byte-shuffled.

    A cheap check on a sample (the first 64 KiB) with zlib's fastest level:
    shuffled, it must come out at most 90 % of the size it has unshuffled.
    Smooth fields (elevation models, images, simulated fields) pass; arrays
    of few distinct values (rounded readings) compress better as they are.
    """
    if itemsize < 2 or len(raw) < LARGE:
        return False
    sample = raw[: (_SHUFFLE_SAMPLE // itemsize) * itemsize]
    plain = len(zlib.compress(sample, 1))
    return len(zlib.compress(shuffled(sample, itemsize), 1)) <= _SHUFFLE_GAIN * plain


def _bin_header(size: int) -> bytes:
    if size >= _MAX_SIZE:
        raise ValueError(f"a buffer of {size} bytes is too large for msgpack")
    if size < 0x100:
        return struct.pack(">BB", 0xC4, size)
    if size < 0x10000:
        return struct.pack(">BH", 0xC5, size)
    return struct.pack(">BI", 0xC6, size)


# msgpack sizes are 32-bit.
_MAX_SIZE: Final = 2**32
_FIXEXT: Final = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def _ext_header(code: int, size: int) -> bytes:
    if size >= _MAX_SIZE:
        raise ValueError(f"an extension payload of {size} bytes is too large for msgpack")
    fixed = _FIXEXT.get(size)
    if fixed is not None:
        return struct.pack(">Bb", fixed, code)
    if size < 0x100:
        return struct.pack(">BBb", 0xC7, size, code)
    if size < 0x10000:
        return struct.pack(">BHb", 0xC8, size, code)
    return struct.pack(">BIb", 0xC9, size, code)
