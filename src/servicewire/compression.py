"""Content encodings: zstd and gzip, negotiated, applied only when they pay.

Bytes in, bytes out; nothing here knows Django. The views and the client
read ``Content-Encoding`` and ``Accept-Encoding`` and call these; the one
header name here, :data:`SHUFFLE_HEADER`, is kept where both sides find it.

- :func:`choose` picks the encoding to answer in from ``Accept-Encoding``.
- :func:`worth_compressing` says whether a body is big enough and
  compressible enough to pay for the CPU: at least ``threshold`` bytes, and a
  sample of it shrinks to at most 90 % with the fastest setting. Random-looking
  float64 data (most scientific arrays) does not, so it goes as it is.
- :func:`compress` encodes a body given as segments, without joining them.
- Arrays in a compressed msgpack body may be byte-shuffled first, where a
  sample says it pays (:func:`servicewire.segments.shuffle_pays`): the bytes
  of a float's exponent then sit together, and a smooth field compresses
  up to twice as well. A site does so only for a client that sends
  :data:`SHUFFLE_HEADER`; the site always reads them.
- :func:`decompress` decodes a received body into one buffer and refuses,
  with ``PayloadTooLarge``, to grow it past a limit: a small bomb cannot
  exhaust memory.

zstd needs the ``zstandard`` package (``pip install servicewire[zstd]``);
gzip is always there.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any, Final

from servicewire.errors import BadRequest, PayloadTooLarge

Segment = bytes | bytearray | memoryview

#: A request header: ``1`` says the client reads byte-shuffled arrays
#: (msgpack extension type 14), which the site then writes in compressed
#: answers where shuffling pays.
SHUFFLE_HEADER: Final = "X-Servicewire-Shuffle"
#: Bodies smaller than this are never compressed: the header and the CPU
#: would cost more than the bytes saved.
THRESHOLD: Final = 64 * 1024
_SLICES: Final = 16
_SLICE: Final = 4 * 1024
_WORTH_RATIO: Final = 0.9
_CHUNK: Final = 1 << 20


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def available() -> tuple[str, ...]:
    """The encodings this program can read and write, best first."""
    return ("zstd", "gzip") if _zstd() is not None else ("gzip",)


def choose(accept_encoding: str | None) -> str | None:
    """The best encoding ``Accept-Encoding`` admits, or None for identity.

    q-values are honoured (``q=0`` refuses); ``*`` admits every encoding.
    """
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        quality = 1.0
        key, _, value = params.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                quality = float(value)
            except ValueError:
                continue
        weights[name.strip().lower()] = quality
    best: tuple[float, int, str] | None = None
    for rank, name in enumerate(available()):
        quality = weights.get(name, weights.get("*", 0.0))
        if quality > 0 and (best is None or (quality, -rank) > (best[0], best[1])):
            best = (quality, -rank, name)
    return best[2] if best else None


def worth_compressing(segments: Sequence[Segment], size: int, threshold: int = THRESHOLD) -> bool:
    """Whether compressing a body of ``size`` bytes is likely to pay.

    A cheap check: 64 KiB of the largest segment, in 16 slices taken all
    along it, compressed with zlib's fastest level, must shrink to 90 % or less.
    """
    if size < threshold or not segments:
        return False
    largest = memoryview(max(segments, key=len)).cast("B")
    step = max(_SLICE, len(largest) // _SLICES)
    # Slices from all along it: a byte-shuffled array is compressible only
    # in its later planes (a float's exponent), not in its first bytes.
    sample = b"".join(largest[start : start + _SLICE] for start in range(0, len(largest), step))
    return len(zlib.compress(sample, 1)) <= _WORTH_RATIO * len(sample)


def compress(segments: Iterable[Segment], encoding: str) -> list[bytes]:
    """``segments`` encoded as one ``encoding`` stream, in chunks."""
    if encoding == "zstd":
        zstd = _zstd()
        if zstd is None:
            raise ValueError("zstd needs the zstandard package: pip install servicewire[zstd]")
        compressor = zstd.ZstdCompressor(level=3).compressobj()
        out = [compressor.compress(_as_bytes_like(s)) for s in segments]
        out.append(compressor.flush())
    elif encoding == "gzip":
        gz = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        out = [gz.compress(_as_bytes_like(s)) for s in segments]
        out.append(gz.flush())
    else:
        raise ValueError(f"unknown content encoding {encoding!r}")
    return [chunk for chunk in out if chunk]


def decompress(data: Segment, encoding: str, limit: int) -> bytearray:
    """Decode a body sent with ``Content-Encoding: encoding``, at most ``limit`` bytes.

    Raises ValueError for an encoding this program cannot read (the caller
    answers 415), BadRequest for a corrupt stream, PayloadTooLarge past ``limit``.
    """
    encoding = encoding.strip().lower()
    if encoding not in available():
        raise ValueError(f"unsupported content encoding {encoding!r}")
    out = bytearray()
    view = memoryview(data).cast("B")
    try:
        if encoding == "zstd":
            # Reads of at most one chunk each: a bomb never expands past
            # limit + one chunk in memory. (A stream cut short reads as a
            # shorter body; HTTP framing already refuses a short body, and
            # the codec refuses a truncated document.)
            reader = _zstd().ZstdDecompressor().stream_reader(view, read_across_frames=True)
            while chunk := reader.read(_CHUNK):
                out += chunk
                _check_size(len(out), limit)
        else:
            gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pending: bytes | memoryview = view
            while pending:
                # max_length bounds each step, so a bomb never expands past
                # limit + one chunk in memory.
                out += gz.decompress(pending, _CHUNK)
                _check_size(len(out), limit)
                pending = gz.unconsumed_tail
            out += gz.flush()
            _check_size(len(out), limit)
            if not gz.eof:
                raise BadRequest("the gzip body is truncated")
    except (zlib.error, _zstd_error()) as exc:
        raise BadRequest(f"the {encoding} body cannot be decoded: {exc}") from None
    return out


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLarge(
            f"the body decompresses to more than {limit} bytes, the most this site accepts",
            details={"limit": limit},
        )


def _zstd_error() -> type[Exception]:
    zstd = _zstd()
    return zstd.ZstdError if zstd is not None else zlib.error


def _as_bytes_like(segment: Segment) -> Segment:
    return segment if not isinstance(segment, memoryview) else segment.cast("B")
