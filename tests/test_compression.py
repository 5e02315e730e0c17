"""Content encodings: negotiation, when compression pays, and bounded decoding."""

from __future__ import annotations

import gzip
import os
from typing import Any

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


# -- over HTTP: the site and the client ----------------------------------------


@pytest.fixture
def mount(live_server: Any) -> str:
    return f"{live_server.url}/services/"


def _last_entry() -> Any:
    from servicewire.models import AuditEntry

    return AuditEntry.objects.order_by("-pk")[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("compress", [True, False], ids=["asked", "not-asked"])
def test_compressible_arrays_travel_compressed_only_when_asked(
    mount: str, key: str, compress: bool
) -> None:
    from servicewire import Client

    zeros = np.zeros(1_000_000)
    with Client(mount, key, compress=compress) as sw:
        back = sw.echo(value=zeros)
        sent, received = _last_entry().bytes_in, _last_entry().bytes_out
    np.testing.assert_array_equal(back, zeros)
    assert back.flags.writeable
    if compress:
        assert sent < zeros.nbytes // 50 and received < zeros.nbytes // 50
    else:
        assert sent > zeros.nbytes and received > zeros.nbytes


@pytest.mark.django_db(transaction=True)
def test_random_bits_go_uncompressed_even_when_asked(mount: str, key: str) -> None:
    from servicewire import Client

    # (Uniform floats in [0, 1) do compress once shuffled: their exponents repeat.)
    noise = np.random.default_rng(3).integers(0, 2**63, 500_000)
    with Client(mount, key, compress=True) as sw:
        np.testing.assert_array_equal(sw.echo(value=noise), noise)
    assert _last_entry().bytes_out > noise.nbytes


@pytest.mark.django_db(transaction=True)
def test_a_signed_compressed_upload_verifies(mount: str, tmp_path: Any) -> None:
    from servicewire import Client
    from servicewire.models import ClientApp
    from servicewire.signatures import register_public_key
    from servicewire.signing import generate_private_key, public_key_text, write_private_key

    private = generate_private_key()
    write_private_key(tmp_path / "key.pem", private)
    client = ClientApp.objects.create(name="signer")
    key_id = register_public_key(client, public_key_text(private)).key_id
    ones = np.ones(300_000)
    with Client(mount, key_id=key_id, signing_key=str(tmp_path / "key.pem"), compress=True) as sw:
        np.testing.assert_array_equal(sw.echo(value=ones), ones)
    assert _last_entry().bytes_in < ones.nbytes // 50


def _raw_post(mount: str, key: str, body: bytes, encoding: str) -> Any:
    import httpx

    return httpx.post(
        mount + "echo",
        content=body,
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Content-Encoding": encoding,
        },
        timeout=30,
    )


@pytest.mark.django_db(transaction=True)
def test_the_site_reads_curl_style_gzip_bodies(mount: str, key: str) -> None:
    response = _raw_post(mount, key, gzip.compress(b'{"value": [1, 2, 3]}'), "gzip")
    assert response.status_code == 200
    assert response.json() == [1, 2, 3]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("body", "encoding", "status", "error"),
    [
        (b'{"value": 1}', "br", 415, "UnsupportedMediaType"),
        (b"\x1f\x8b\x08\x00garbage", "gzip", 400, "BadRequest"),
        (gzip.compress(b'{"value": "' + b"a" * 3000 + b'"}'), "gzip", 413, "PayloadTooLarge"),
    ],
    ids=["unknown-encoding", "corrupt-gzip", "bomb"],
)
def test_bad_encoded_bodies_are_refused(
    mount: str, key: str, body: bytes, encoding: str, status: int, error: str
) -> None:
    from django.test import override_settings

    with override_settings(SERVICEWIRE={"REQUIRE_HTTPS": False, "MAX_BODY_BYTES": 1000}):
        response = _raw_post(mount, key, body, encoding)
    assert response.status_code == status
    assert response.json()["error"]["type"] == error
    entry = _last_entry()
    assert (entry.status, entry.error_type) == (status, error)


def _smooth_field(n: int = 500_000) -> np.ndarray:  # type: ignore[type-arg]
    """A smooth float64 field, like an elevation model or a simulated quantity."""
    return np.cumsum(np.random.default_rng(5).normal(0, 1e-3, n))


def test_shuffling_pays_on_smooth_fields_and_not_on_few_distinct_values() -> None:
    from servicewire.segments import shuffle_pays

    def raw(array: np.ndarray) -> memoryview:  # type: ignore[type-arg]
        return memoryview(array.reshape(-1).view(np.uint8))

    field = _smooth_field()
    readings = np.round(np.sin(np.linspace(0, 400, 500_000)), 3)
    image = (np.add.outer(np.arange(700), np.arange(700)) % 4096).astype(np.uint16)
    assert shuffle_pays(raw(field), 8)
    assert shuffle_pays(raw(image), 2)
    assert not shuffle_pays(raw(readings), 8)
    assert not shuffle_pays(raw(np.zeros(500_000, np.uint8)), 1)  # nothing to shuffle


@pytest.mark.parametrize(
    "array",
    [
        _smooth_field(),
        np.asfortranarray(_smooth_field().reshape(500, 1000)).astype(np.float32),
        (np.arange(400_000) % 4096).astype(np.uint16).reshape(20, -1),
        (_smooth_field(300_000) * 1e6).astype(np.int32),
    ],
    ids=["f8", "f4-fortran", "u2-2d", "i4"],
)
def test_shuffled_arrays_decode_to_the_same_array(array: np.ndarray) -> None:  # type: ignore[type-arg]
    from servicewire.segments import pack_segments
    from servicewire.values import EXT_SHUFFLED_NDARRAY, unpackb

    segments = pack_segments({"x": array, "n": 1}, shuffle=True)
    body = b"".join(bytes(segment) for segment in segments)
    assert bytes([EXT_SHUFFLED_NDARRAY]) in body[:64]  # written as type 14
    back = unpackb(body)["x"]
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    # Without being asked, the same value is the plain encoding.
    from servicewire.values import packb

    assert b"".join(bytes(s) for s in pack_segments({"x": array, "n": 1})) == packb(
        {"x": array, "n": 1}
    )


def test_a_malformed_shuffled_array_is_a_bad_request() -> None:
    import msgpack

    from servicewire.values import EXT_SHUFFLED_NDARRAY, unpackb

    for payload in (["<f8", [3], "C", b"\0" * 23], ["<f8", [4], "C", b"\0" * 24]):
        body = msgpack.packb(
            msgpack.ExtType(EXT_SHUFFLED_NDARRAY, msgpack.packb(payload, use_bin_type=True))
        )
        with pytest.raises(BadRequest, match=r"needs (24|32) bytes"):
            unpackb(body)


@pytest.mark.django_db(transaction=True)
def test_smooth_fields_travel_shuffled_and_smaller_when_compressing(mount: str, key: str) -> None:
    from servicewire import Client

    field = _smooth_field(1_000_000)
    with Client(mount, key, compress=True) as sw:
        back = sw.echo(value=field)
        shuffled_in, shuffled_out = _last_entry().bytes_in, _last_entry().bytes_out
    np.testing.assert_array_equal(back, field)
    # The same body compressed as it is, without shuffling.
    from servicewire.segments import pack_segments

    plain = b"".join(compression.compress(pack_segments({"value": field}), "zstd"))
    assert shuffled_in < 0.85 * len(plain)
    assert shuffled_out < 0.85 * len(plain)


@pytest.mark.django_db(transaction=True)
def test_a_client_that_does_not_ask_gets_plain_arrays(mount: str, key: str) -> None:
    import httpx

    from servicewire.values import packb, unpackb

    field = _smooth_field()
    body = packb({"value": field})
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/msgpack",
        "Accept": "application/msgpack",
        "Accept-Encoding": "zstd",
    }
    plain = httpx.post(mount + "echo", content=body, headers=headers, timeout=30)
    asked = httpx.post(
        mount + "echo",
        content=body,
        headers=headers | {compression.SHUFFLE_HEADER: "1"},
        timeout=30,
    )
    # httpx undoes the content encoding; what is left is the msgpack body.
    assert plain.content == packb(field)  # exactly the plain encoding (type 12)
    assert asked.headers["Content-Encoding"] == "zstd"
    assert asked.content != packb(field)
    assert int(asked.headers["Content-Length"]) < 0.85 * len(body)
    np.testing.assert_array_equal(unpackb(asked.content), field)
