"""Large uploads the async client sends straight to the socket, against a real HTTP/1.1 server.

The server is a small threaded socket server on 127.0.0.1 that reads each
request by hand, so that it can also answer before reading the body or stop
reading altogether. It records the client port and a digest of every body it
received, so the tests see what arrived and whether the connection was kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from servicewire import AsyncClient, errors
from servicewire.values import packb

KEY = "sw_abcdefghijkl_" + "k" * 43


@dataclass
class Site:
    url: str = ""
    # (client port, body size, body digest) of every body read whole.
    bodies: list[tuple[int, int, str]] = field(default_factory=list)
    # Ports of connections the client closed before the server stopped reading.
    closed: list[int] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def _head(stream: Any) -> tuple[str, int] | None:
    request_line = stream.readline()
    if not request_line:
        return None
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return request_line.split()[1].decode().rsplit("/", 1)[-1], length


@pytest.fixture
def site() -> Iterator[Site]:
    state = Site()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            port = self.client_address[1]
            while (head := _head(self.rfile)) is not None:
                name, length = head
                if name == "early":
                    # Refuse before reading the body, as a size limit does.
                    body = json.dumps(
                        {"error": {"type": "PayloadTooLarge", "message": "no", "details": None}}
                    ).encode()
                    self.wfile.write(
                        b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                        b"Connection: close\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
                    )
                    return
                if name == "stall":
                    # Read nothing: the client's sending waits until it gives up.
                    state.release.wait(30)
                    self.connection.settimeout(5)
                    try:
                        while self.connection.recv(1 << 20):
                            pass
                    except OSError:
                        pass
                    state.closed.append(port)
                    return
                body = self.rfile.read(length)
                state.bodies.append((port, len(body), hashlib.sha256(body).hexdigest()))
                answer = packb(len(body))
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/msgpack\r\n"
                    b"Content-Length: %d\r\n\r\n%b" % (len(answer), answer)
                )

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/services/"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
    thread.join(10)


def _count_direct(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record, for each large upload, whether it took the direct path."""
    from servicewire import rawbody

    taken: list[bool] = []
    original = rawbody.async_direct_sender

    def spy(transport: Any, stream: object, pieces: Any) -> Any:
        send = original(transport, stream, pieces)
        taken.append(send is not None)
        return send

    monkeypatch.setattr("servicewire.client.async_direct_sender", spy)
    return taken


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(packb({"data": array})).hexdigest()


def test_a_large_upload_arrives_whole_and_the_connection_is_kept(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = _count_direct(monkeypatch)
    arrays = [np.random.default_rng(seed).normal(size=1_500_000) for seed in range(3)]

    async def calls() -> list[Any]:
        async with AsyncClient(site.url, KEY) as sw:
            answers = []
            for array in arrays:
                answers.append(await sw.up(data=array))
                answers.append(await sw.small(a=1))
            return answers

    answers = asyncio.run(calls())
    assert taken == [True, True, True]
    sizes = [size for _, size, _ in site.bodies]
    assert answers == sizes
    assert [digest for _, _, digest in site.bodies[::2]] == [_digest(a) for a in arrays]
    # Six calls, one connection: h11 saw each body end, so it was pooled.
    assert len({port for port, _, _ in site.bodies}) == 1


def test_progress_counts_every_byte_sent_directly(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from servicewire import progress

    counted: dict[str, list[int]] = {}
    closed: list[str] = []

    class Counting(progress.Meter):
        def __init__(self, what: str) -> None:
            self.what = what
            counted[what] = []

        def update(self, count: int) -> None:
            counted[self.what].append(count)

        def close(self) -> None:
            closed.append(self.what)

    monkeypatch.setattr(progress.Progress, "meter", lambda self, what, total: Counting(what))
    taken = _count_direct(monkeypatch)
    array = np.ones(3_000_000)

    async def call() -> Any:
        async with AsyncClient(site.url, KEY, progress=True) as sw:
            return await sw.up(data=array)

    size = asyncio.run(call())
    assert taken == [True]
    assert sum(counted["'up' up"]) == size == site.bodies[0][1]
    assert "'up' up" in closed


def test_an_answer_before_the_body_is_read_is_the_servers_error(
    site: Site,
) -> None:
    array = np.ones(4_000_000)  # 32 MB: more than the socket buffers take in

    async def calls() -> Any:
        async with AsyncClient(site.url, KEY) as sw:
            with pytest.raises(errors.ServiceError) as raised:
                await sw.early(data=array)
            return raised.value, await sw.up(data=array)

    error, size = asyncio.run(calls())
    # The server's own answer, as the blocking Client reports it.
    assert isinstance(error, errors.ServiceError) and error.status == 413
    assert error.message == "no"
    assert size == len(packb({"data": array}))
    assert len(site.bodies) == 1


def test_a_cancelled_upload_closes_its_connection(site: Site) -> None:
    array = np.ones(4_000_000)

    async def calls() -> int:
        async with AsyncClient(site.url, KEY) as sw:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(sw.stall(data=array), 0.5)
            site.release.set()
            size: int = await sw.up(data=array)
            return size

    size = asyncio.run(calls())
    assert size == len(packb({"data": array}))
    # The cancelled call's connection was closed, not handed to the next call
    # with half a body in it (which the server would have read as a request).
    assert len(site.closed) == 1 and site.closed[0] != site.bodies[0][0]
    assert len(site.bodies) == 1


def test_a_server_that_stops_reading_is_a_write_timeout(site: Site) -> None:
    array = np.ones(4_000_000)

    async def call() -> None:
        async with AsyncClient(site.url, KEY, timeout=0.5) as sw:
            await sw.stall(data=array)

    with pytest.raises(errors.TransportError, match="WriteTimeout"):
        asyncio.run(call())
    site.release.set()
