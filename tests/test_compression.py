"""Content encodings: negotiation, when compression pays, and bounded decoding."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import zstandard

from servicewire import compression
from servicewire.errors import BadRequest, PayloadTooLarge


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        (None, None),
        ("", None),
        ("gzip", "gzip"),
        ("zstd", "zstd"),
        ("gzip, zstd", "zstd"),
        ("zstd;q=0.5, gzip", "gzip"),
        ("zstd;q=0, gzip;q=0", None),
        ("*", "zstd"),
        ("*;q=0.1, gzip;q=0.9", "gzip"),
        ("br, deflate", None),
        ("gzip;q=nonsense, zstd", "zstd"),
    ],
)
def test_choose_follows_accept_encoding(header: str | None, chosen: str | None) -> None:
    assert compression.choose(header) == chosen


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_segments_round_trip_without_being_joined_first(encoding: str) -> None:
    array = np.arange(200_000, dtype=np.int64)
    segments = [b"header", memoryview(array).cast("B"), bytearray(b"tail")]
    encoded = b"".join(compression.compress(segments, encoding))
    assert len(encoded) < array.nbytes // 4
    decoded = compression.decompress(encoded, encoding, limit=10**7)
    assert decoded == b"header" + array.tobytes() + b"tail"
    # Interoperable with the standard tools' own formats.
    plain = gzip.decompress(encoded) if encoding == "gzip" else _zstd_whole(encoded)
    assert plain == bytes(decoded)


def _zstd_whole(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(data).read()


def test_random_floats_are_not_worth_compressing_but_zeros_are() -> None:
    noise = np.random.default_rng(1).random(100_000)
    assert not compression.worth_compressing([memoryview(noise)], noise.nbytes)
    zeros = np.zeros(100_000)
    assert compression.worth_compressing([memoryview(zeros)], zeros.nbytes)


def test_small_bodies_are_never_compressed() -> None:
    assert not compression.worth_compressing([b"a" * 1000], 1000)


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_a_decompression_bomb_is_refused_past_the_limit(encoding: str) -> None:
    # 1 GiB of zeros squeezes into about a megabyte or less.
    zeros = memoryview(bytes(2**24))
    bomb = b"".join(compression.compress([zeros] * 64, encoding))
    assert len(bomb) < 2**21
    with pytest.raises(PayloadTooLarge) as refused:
        compression.decompress(bomb, encoding, limit=2**22)
    assert refused.value.details == {"limit": 2**22}


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_corrupt_streams_are_bad_requests(encoding: str) -> None:
    with pytest.raises(BadRequest):
        compression.decompress(os.urandom(5000), encoding, limit=10**6)


def test_a_truncated_gzip_stream_is_a_bad_request() -> None:
    whole = gzip.compress(os.urandom(10_000))
    with pytest.raises(BadRequest, match="truncated"):
        compression.decompress(whole[:-100], "gzip", limit=10**6)


def test_unknown_encodings_are_refused_for_the_caller_to_answer_415() -> None:
    with pytest.raises(ValueError, match="unsupported content encoding 'br'"):
        compression.decompress(b"x", "br", limit=10)
