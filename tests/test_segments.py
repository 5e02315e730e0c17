"""Large bodies without copies: msgpack as segments, streamed both ways.

The encoding half checks that the segments are ``packb``'s bytes exactly;
the live half sends big arrays through a real server and client.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from django.test import Client as DjangoClient

from servicewire import AsyncClient, Client, segments
from servicewire.client import _http_request, _Upload
from servicewire.models import AuditEntry, ClientApp
from servicewire.segments import pack_segments
from servicewire.signatures import register_public_key
from servicewire.signing import generate_private_key, public_key_text, write_private_key
from servicewire.values import packb, unpackb
from tests.test_values import DTYPES, ROWS, SHAPES

BIG = np.arange(100_000, dtype=np.float64)  # 800 kB: referenced, not copied


def assert_same_bytes(value: Any) -> list[segments.Segment]:
    parts = pack_segments(value)
    assert b"".join(parts) == packb(value)
    assert all(isinstance(p, bytes) or (p.format == "B" and p.ndim == 1) for p in parts)
    return parts


@pytest.fixture(params=[0, 1, segments.LARGE], ids=["every-buffer", "one-byte", "default"])
def threshold(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    # A low threshold sends every buffer and container down the piecewise path.
    monkeypatch.setattr(segments, "LARGE", request.param)
    return int(request.param)


@pytest.mark.parametrize("value", [v for _, v in ROWS], ids=[i for i, _ in ROWS])
def test_segments_are_packb_bytes_for_every_value(value: Any, threshold: int) -> None:
    assert_same_bytes(value)
    assert_same_bytes([value, BIG, {"v": value, "b": b"x" * 70_000}])
    assert_same_bytes({"k": (value, BIG), "s": frozenset({b"y" * 70_000})})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [*SHAPES, (300, 40)], ids=str)
def test_segments_are_packb_bytes_for_every_array(dtype: str, shape: Any, threshold: int) -> None:
    array = np.zeros(shape, dtype=dtype)
    assert_same_bytes(array)
    assert_same_bytes(np.asfortranarray(array))
    assert_same_bytes({"a": (array, {array.tobytes()}), "n": [array, None]})
    if array.ndim == 2:
        assert_same_bytes(array[:, ::2])


@pytest.mark.parametrize("size", [0, 255, 256, 65_535, 65_536, 70_000])
def test_segments_of_buffers_at_every_header_size(size: int, threshold: int) -> None:
    for buffer in (b"b" * size, bytearray(size), memoryview(b"m" * size)):
        assert_same_bytes(buffer)
        assert_same_bytes((buffer, [buffer], {buffer if isinstance(buffer, bytes) else 1: 2}))
    assert_same_bytes(np.zeros(size, dtype=np.uint8))


def test_nested_mixtures_and_subclasses_are_packb_bytes() -> None:
    class Tagged(dict[str, Any]):
        pass

    value = {
        "meta": {"name": "run", "when": ROWS[31][1], "floats": [float(i) for i in range(1000)]},
        "arrays": [BIG, np.asfortranarray(BIG.reshape(400, 250)), BIG[::3]],
        "tuple": (1, (2, (BIG,)), {3, 4}),
        "subclass": Tagged(data=BIG),
        "raw": memoryview(BIG).cast("B"),
    }
    parts = assert_same_bytes(value)
    assert any(isinstance(p, memoryview) and np.shares_memory(np.asarray(p), BIG) for p in parts)
    assert unpackb(b"".join(parts))["arrays"][0].tolist() == BIG.tolist()


def test_small_values_are_one_segment_and_big_buffers_are_views() -> None:
    assert pack_segments({"a": 1, "b": [2.0] * 1000}) == [packb({"a": 1, "b": [2.0] * 1000})]
    parts = pack_segments({"x": BIG})
    views = [p for p in parts if isinstance(p, memoryview)]
    assert len(views) == 1 and len(views[0]) == BIG.nbytes
    assert np.shares_memory(np.asarray(views[0]), BIG)


def test_segments_refuse_what_packb_refuses() -> None:
    strided = memoryview(np.arange(40_000.0))[::2]
    for bad in (strided, {"x": [BIG, object()]}, np.array(["text"] * 20_000)):
        with pytest.raises((TypeError, BufferError)) as by_segments:
            pack_segments(bad)
        with pytest.raises((TypeError, BufferError)) as by_packb:
            packb(bad)
        assert type(by_segments.value) is type(by_packb.value)


# -- live: a real server and client ------------------------------------------

pytestmark = pytest.mark.django_db(transaction=True)

FIFTY_MB = 50 * 10**6 // 8


@pytest.fixture
def url(live_server: Any) -> str:
    return f"{live_server.url}/services/"


@pytest.fixture
def sw(url: str, key: str) -> Iterator[Client]:
    with Client(url, key) as client:
        yield client


def test_fifty_megabytes_up_and_down_keep_values_dtype_and_order(sw: Client) -> None:
    source = np.asfortranarray(np.arange(FIFTY_MB, dtype=">f8").reshape(2500, 2500))
    back = sw.echo(value={"data": source, "tag": "big"})
    assert back["tag"] == "big"
    data = back["data"]
    assert data.dtype.str == ">f8" and data.shape == source.shape
    assert data.flags.f_contiguous and data.flags.writeable
    np.testing.assert_array_equal(data, source)


def test_big_responses_are_streamed_with_a_content_length(url: str, key: str) -> None:
    array = np.arange(FIFTY_MB, dtype=np.float64)
    body, expected = packb({"value": array}), packb(array)
    headers = {
        "Content-Type": "application/msgpack",
        "Authorization": f"Bearer {key}",
        "Accept-Encoding": "identity",
    }
    django = DjangoClient().post(
        "/services/echo", body, content_type="application/msgpack", headers=headers
    )
    assert django.streaming
    content = b"".join(django.streaming_content)
    assert int(django["Content-Length"]) == len(content) == len(expected)
    assert content == expected
    with httpx.Client() as http:
        live = http.post(url + "echo", content=body, headers=headers)
    assert live.headers["content-length"] == str(len(expected))
    assert "transfer-encoding" not in live.headers
    assert live.content == expected


def test_audit_counts_streamed_bodies(key: str) -> None:
    body = packb({"value": np.arange(FIFTY_MB // 10, dtype=np.float64)})
    response = DjangoClient().post(
        "/services/echo",
        body,
        content_type="application/msgpack",
        headers={"Authorization": f"Bearer {key}"},
    )
    sent = b"".join(response.streaming_content)
    row = AuditEntry.objects.order_by("-pk")[0]
    assert (row.service, row.bytes_in, row.bytes_out) == ("echo", len(body), len(sent))


def test_small_responses_stay_plain(key: str) -> None:
    response = DjangoClient().post(
        "/services/add",
        packb({"a": 1, "b": 2}),
        content_type="application/msgpack",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert not response.streaming and unpackb(response.content) == 3


def test_upload_bodies_are_streamed_in_pieces_never_joined(url: str) -> None:
    array = np.arange(1_000_000, dtype=np.float64)
    with Client(url, "k") as sw:
        request = sw._call_request("echo", {"value": array})
        built = _http_request(sw._http, request, sw._progress)
    assert isinstance(built.stream, _Upload)
    assert built.headers["Content-Length"] == str(len(packb({"value": array})))
    assert "Transfer-Encoding" not in built.headers
    pieces = list(built.stream)
    assert max(map(len, pieces)) <= 512 * 1024
    assert b"".join(pieces) == packb({"value": array})
    assert b"".join(built.stream) == b"".join(pieces)  # can be sent again


_UPLOADER = """
import json, sys
import numpy as np
from servicewire import Client

def peak_growth(action):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    status = lambda: {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/self/status")
                      if l.startswith(("VmHWM", "VmRSS"))}
    before = status()["VmRSS"]
    result = action()
    return result, (status()["VmHWM"] - before) * 1024

with Client(sys.argv[1], sys.argv[2]) as sw:
    sw.add(a=1, b=2)
    data = np.ones(int(sys.argv[3]), dtype=np.uint8)
    result, growth = peak_growth(lambda: sw.call("pickled.array_flags", value=data))
print(json.dumps({"growth": growth, "result": result}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_uploading_a_big_array_adds_little_client_memory(url: str, key: str) -> None:
    size = 128 * 2**20
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_UPLOADER), url, key, str(size)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["result"]["writeable"]
    # The joined body alone would be a whole second copy of the array.
    assert report["growth"] < size * 0.25, report


def test_signed_twenty_megabyte_bodies_verify(url: str, tmp_path: Path) -> None:
    client, _ = ClientApp.objects.get_or_create(name="big-signer")
    private = generate_private_key()
    path = tmp_path / "big-signer.pem"
    write_private_key(path, private)
    key_id = register_public_key(client, public_key_text(private)).key_id
    samples = np.arange(20 * 10**6 // 8, dtype=np.float64)
    with Client(url, key_id=key_id, signing_key=str(path)) as sw:
        np.testing.assert_array_equal(sw.science.double(samples=samples), samples * 2)

    async def main() -> Any:
        async with AsyncClient(url, key_id=key_id, signing_key=str(path)) as aw:
            return await aw.science.double(samples=samples)

    np.testing.assert_array_equal(asyncio.run(main()), samples * 2)


def test_receive_buffers_are_writable_and_zeroed() -> None:
    small, large = segments.receive_buffer(10), segments.receive_buffer(16 * 2**20)
    assert isinstance(small, bytearray) and small == bytearray(10)
    assert isinstance(large, memoryview) and not large.readonly and len(large) == 16 * 2**20
    assert not any(large[:: 2**20])
    body = packb(BIG)
    large[: len(body)] = body
    array = unpackb(large[: len(body)])
    assert array.flags.writeable and array.tolist() == BIG.tolist()
