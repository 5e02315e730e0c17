"""Bytes in, values out: the wire codecs, their negotiation and the bounds on input.

A :class:`Codec` turns values into a body and a body back into values.
Decoding is the trust boundary: every failure becomes
:class:`~servicewire.errors.BadRequest` (or ``PayloadTooLarge`` for an
oversized body) with a message fit to send back, and a decoded value is
checked against :class:`Limits` before anyone sees it.

- :data:`MSGPACK` carries the rich values of :mod:`servicewire.values` exactly.
- :data:`PICKLE` (:mod:`servicewire.pickling`) carries whole Python objects
  through an allow-list, for callers a site allows; it is in no default set.
- :data:`JSON` reads natural JSON as it is (conversion by type hints happens
  in the registry) and writes values in their natural JSON form. JSON has no
  NaN or infinity: msgspec writes them as ``null``, which every JSON parser
  reads, rather than tokens most parsers reject; send floats that must stay
  NaN in msgpack.

Example::

    body = MSGPACK.encode({"a": 1, "b": (2, 3)})
    MSGPACK.decode(body)                      # {"a": 1, "b": (2, 3)}
    negotiate("application/json;q=0.9, */*;q=0.1", default=MSGPACK)  # JSON
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import msgspec

from servicewire.errors import BadRequest, PayloadTooLarge, ServiceError
from servicewire.segments import Segment, pack_segments
from servicewire.values import packb, to_natural_json, unpackb

__all__ = [
    "ALL_CODECS",
    "CODECS",
    "DEFAULT_LIMITS",
    "JSON",
    "MSGPACK",
    "PICKLE",
    "Codec",
    "JsonCodec",
    "Limits",
    "MsgpackCodec",
    "check_limits",
    "codec_for_content_type",
    "negotiate",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one decoded body may hold.

    ``max_length`` counts the items of any one list, tuple, set or dict;
    ``max_str_length`` counts the characters of any one string (bytes and
    arrays are bounded only by the body size); ``max_depth`` counts nested
    containers, the outermost being level 1.
    """

    max_body_bytes: int = 256 * 2**20
    max_depth: int = 64
    max_length: int = 10_000_000
    max_int_bits: int = 4096
    max_str_length: int = 64 * 2**20


DEFAULT_LIMITS: Final = Limits()

Body = bytes | bytearray | memoryview


class Codec:
    """One wire format: a name, its media types, and encode/decode.

    Subclasses set ``name``, ``content_type`` (the canonical media type, sent
    in responses), ``media_types`` (every media type read as this codec) and
    implement :meth:`encode` and :meth:`_load`.
    """

    name: ClassVar[str]
    content_type: ClassVar[str]
    media_types: ClassVar[frozenset[str]]

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` as a body; ``TypeError`` for a value this codec cannot carry."""
        raise NotImplementedError

    def encode_segments(self, value: Any, shuffle: bool = False) -> list[Segment]:
        """Encode ``value`` as a body in segments, to be sent one after the other.

        Large buffers may be views of memory inside ``value`` rather than
        copies (see :mod:`servicewire.segments`); a codec without such
        buffers gives one segment, its :meth:`encode`. ``shuffle`` (for a body
        to be compressed, to a reader that asked for it) lets the msgpack
        codec byte-shuffle arrays where that pays; other codecs ignore it.
        """
        return [self.encode(value)]

    def decode(self, data: Body, limits: Limits = DEFAULT_LIMITS) -> Any:
        """Decode a received body and check it against ``limits``.

        Raises :class:`~servicewire.errors.PayloadTooLarge` when the body
        exceeds ``limits.max_body_bytes``, and
        :class:`~servicewire.errors.BadRequest` for anything undecodable or
        beyond the other bounds.
        """
        size = memoryview(data).nbytes
        if size > limits.max_body_bytes:
            raise PayloadTooLarge(
                f"body of {size} bytes exceeds the limit of {limits.max_body_bytes} bytes"
            )
        try:
            value = self._load(data)
        except ServiceError:
            raise
        except RecursionError:
            raise BadRequest(
                f"{self.name} body nests too deeply to decode (limit: {limits.max_depth} levels)"
            ) from None
        except MemoryError:
            raise BadRequest(f"{self.name} body needs more memory than the receiver has") from None
        except Exception as exc:
            # The body is untrusted input: whatever it makes the parser raise
            # is the sender's error, reported without a traceback.
            raise BadRequest(f"invalid {self.name} body: {exc}") from None
        check_limits(value, limits, size)
        return value

    def encode_error(self, error: ServiceError) -> bytes:
        """Encode the envelope of ``error``, whatever its ``details`` hold.

        The type and message of an error always reach the caller; details
        this codec cannot carry are replaced by a note saying why.
        """
        try:
            return self.encode(error.to_wire())
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            note = f"details could not be encoded as {self.name}: {exc}"
            envelope = {"type": str(error.type), "message": str(error.message), "details": note}
            return self.encode({"error": envelope})

    def _load(self, data: Body) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Codec {self.name} {self.content_type}>"


class JsonCodec(Codec):
    """Natural JSON: reads plain JSON values, writes rich values naturally."""

    name = "json"
    content_type = "application/json"
    media_types = frozenset({"application/json"})

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(enc_hook=to_natural_json)
        self._decoder = msgspec.json.Decoder()

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` as natural JSON (see :func:`~servicewire.values.to_natural_json`)."""
        try:
            return self._encoder.encode(value)
        except TypeError as exc:
            raise TypeError(f"cannot encode as JSON: {exc}") from None

    def _load(self, data: Body) -> Any:
        return self._decoder.decode(data)


class MsgpackCodec(Codec):
    """msgpack with servicewire's extension types: every value travels exactly."""

    name = "msgpack"
    content_type = "application/msgpack"
    media_types = frozenset(
        {"application/msgpack", "application/vnd.msgpack", "application/x-msgpack"}
    )

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` as msgpack (see :mod:`servicewire.values`)."""
        return packb(value)

    def encode_segments(self, value: Any, shuffle: bool = False) -> list[Segment]:
        """Encode ``value`` as msgpack, arrays and large bytes as views, not copies."""
        return pack_segments(value, shuffle)

    def _load(self, data: Body) -> Any:
        return unpackb(data)


JSON: Final = JsonCodec()
MSGPACK: Final = MsgpackCodec()
CODECS: Final[dict[str, Codec]] = {codec.name: codec for codec in (JSON, MSGPACK)}


def check_limits(value: Any, limits: Limits = DEFAULT_LIMITS, body_size: int | None = None) -> None:
    """Raise :class:`~servicewire.errors.BadRequest` if ``value`` exceeds ``limits``.

    The walk descends only into lists, tuples, sets, frozensets and dicts;
    everything else (arrays and bytes included) is a leaf. ``max_body_bytes``
    is the caller's to check, on the bytes. Given the ``body_size`` the value
    was decoded from, the walk skips string lengths when no string can be
    longer than the body (a character takes at least one byte in any codec).
    """
    leaves = _LEAF_TYPES
    if body_size is not None and body_size <= limits.max_str_length:
        leaves = _LEAF_TYPES_AND_STR
    _check_items((value,), limits, leaves, 0)


# Leaves the walk need not look at; ints and strs are leaves with a bound.
_LEAF_TYPES: Final = frozenset({type(None), bool, float, bytes})
_LEAF_TYPES_AND_STR: Final = _LEAF_TYPES | {str}
_CONTAINER_TYPES: Final = frozenset({list, tuple, set, frozenset, dict})
# Above this many items a container is scanned by item type first; below it,
# a plain loop is cheaper than building the set of types.
_SCAN_THRESHOLD: Final = 32


def _check_container(container: Any, limits: Limits, leaves: frozenset[type], depth: int) -> None:
    if depth > limits.max_depth:
        raise BadRequest(f"nesting deeper than {limits.max_depth} levels")
    length = len(container)
    if length > limits.max_length:
        raise BadRequest(
            f"a {type(container).__name__} of {length} items exceeds the limit "
            f"of {limits.max_length} items"
        )
    if length > _SCAN_THRESHOLD:
        if type(container) is dict:
            _scan_items(container.keys(), limits, leaves, depth)
            _scan_items(container.values(), limits, leaves, depth)
        else:
            _scan_items(container, limits, leaves, depth)
    elif type(container) is dict:
        _check_items(container.keys(), limits, leaves, depth)
        _check_items(container.values(), limits, leaves, depth)
    else:
        _check_items(container, limits, leaves, depth)


def _scan_items(
    items: Collection[Any], limits: Limits, leaves: frozenset[type], depth: int
) -> None:
    # One set of the item types, built at C speed, lets a homogeneous
    # collection (a million floats) pass without a Python-level loop.
    kinds = set(map(type, items))
    if kinds <= leaves:
        return
    if kinds == {int}:
        _check_int_bits(max(map(int.bit_length, items)), limits)
    elif kinds == {str}:
        _check_str_length(max(map(len, items)), limits)
    else:
        _check_items(items, limits, leaves, depth)


def _check_items(items: Iterable[Any], limits: Limits, leaves: frozenset[type], depth: int) -> None:
    for item in items:
        kind = type(item)
        if kind in leaves:
            continue
        if kind is str:
            _check_str_length(len(item), limits)
        elif kind is int:
            _check_int_bits(item.bit_length(), limits)
        elif kind in _CONTAINER_TYPES:
            _check_container(item, limits, leaves, depth + 1)


def _check_int_bits(bits: int, limits: Limits) -> None:
    if bits > limits.max_int_bits:
        raise BadRequest(
            f"an integer of {bits} bits exceeds the limit of {limits.max_int_bits} bits"
        )


def _check_str_length(length: int, limits: Limits) -> None:
    if length > limits.max_str_length:
        raise BadRequest(
            f"a string of {length} characters exceeds the limit of "
            f"{limits.max_str_length} characters"
        )


def codec_for_content_type(header: str | None) -> Codec | None:
    """The codec that reads a body of this ``Content-Type``, or ``None``.

    Parameters (``; charset=utf-8``) and case are ignored. Besides each
    codec's own media types, any ``application/...+json`` type (RFC 6839
    structured syntax suffix, e.g. ``application/problem+json``) is JSON.
    """
    if not header:
        return None
    return _codec_for_media_type(header.split(";", 1)[0].strip().lower())


def negotiate(
    accept: str | None, default: Codec, available: Iterable[Codec] | None = None
) -> Codec | None:
    """Choose the response codec from an ``Accept`` header.

    Each codec gets the q-value of the most specific media range that names
    it (its own type, then ``application/*``, then ``*/*``); ``q=0`` excludes
    it. The highest q wins; on a tie, an explicitly named codec beats a
    wildcard match, then ``default`` beats the rest. A missing or empty
    header means ``default``; ``None`` means nothing acceptable (406).
    ``available`` limits the candidates (every codec in :data:`CODECS` when
    omitted).

    >>> negotiate("application/msgpack, application/json;q=0.5", default=JSON).name
    'msgpack'
    """
    if accept is None or not accept.strip():
        return default
    ranges = _parse_accept(accept)
    candidates = list(CODECS.values() if available is None else available)
    # The default goes first so that a strict comparison keeps it on ties.
    if default in candidates:
        candidates.remove(default)
        candidates.insert(0, default)
    best: Codec | None = None
    best_rank = (0.0, -1)
    for codec in candidates:
        rank = _rank(codec, ranges)
        if rank[0] > 0 and rank > best_rank:
            best, best_rank = codec, rank
    return best


def _codec_for_media_type(media_type: str) -> Codec | None:
    for codec in ALL_CODECS.values():
        if media_type in codec.media_types:
            return codec
    if media_type.startswith("application/") and media_type.endswith("+json"):
        return JSON
    return None


def _parse_accept(accept: str) -> list[tuple[str, float]]:
    """The media ranges of an ``Accept`` header with their q-values.

    Malformed entries (no ``/``, a q that is not a number in [0, 1]) are
    skipped rather than failing the request.
    """
    ranges = []
    for entry in accept.split(","):
        media_range, *params = entry.split(";")
        media_range = media_range.strip().lower()
        if "/" not in media_range:
            continue
        quality: float | None = 1.0
        for param in params:
            key, _, raw = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(raw.strip())
                except ValueError:
                    quality = None
        if quality is not None and 0.0 <= quality <= 1.0:
            ranges.append((media_range, quality))
    return ranges


def _rank(codec: Codec, ranges: list[tuple[str, float]]) -> tuple[float, int]:
    """``(q, specificity)`` of the most specific range matching ``codec``."""
    main_type = codec.content_type.split("/", 1)[0]
    best_specificity, best_quality = -1, 0.0
    for media_range, quality in ranges:
        if media_range == "*/*":
            specificity = 0
        elif media_range == f"{main_type}/*":
            specificity = 1
        elif media_range in codec.media_types or _codec_for_media_type(media_range) is codec:
            # By media type: a site's pickle codec (its own allow-list) is
            # another instance than the registered one.
            specificity = 2
        else:
            continue
        if specificity > best_specificity or (
            specificity == best_specificity and quality > best_quality
        ):
            best_specificity, best_quality = specificity, quality
    return best_quality, best_specificity


# Pickle is known by its media type, but is in no default set: only a caller
# the site allows gets it among its codecs (views), and it is read through an
# allow-list (pickling). Imported last: pickling subclasses Codec.
from servicewire.pickling import PICKLE  # noqa: E402

#: Every codec servicewire knows, pickle included; for lookup by media type.
ALL_CODECS: Final[dict[str, Codec]] = {**CODECS, PICKLE.name: PICKLE}
