"""Large responses received straight from the socket, against a real HTTP/1.1 server.

The server is a small threaded ``http.server`` on 127.0.0.1 answering as a
servicewire site does (msgpack, Content-Length); it records the client port
of every request, so the tests see whether the connection was kept.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from servicewire import Client, rawbody, transport
from servicewire.errors import TransportError
from servicewire.values import packb

KEY = "sw_abcdefghijkl_" + "k" * 43


@dataclass
class Site:
    url: str
    ports: list[int] = field(default_factory=list)
    answers: dict[str, bytes] = field(default_factory=dict)
    cut_short: set[str] = field(default_factory=set)


@pytest.fixture
def site() -> Iterator[Site]:
    state = Site(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.ports.append(self.client_address[1])
            name = self.path.rsplit("/", 1)[-1]
            body = state.answers[name]
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/msgpack\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            if name in state.cut_short:
                self.wfile.write(head + body[: len(body) // 2])
                self.close_connection = True
                return
            # Headers and the first bytes in one write, as servers do: the
            # client's parser holds some of the body before it is asked.
            self.wfile.write(head + body[:100_000])
            self.wfile.write(body[100_000:])

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/services/"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(10)


def _count_direct(monkeypatch: pytest.MonkeyPatch, name: str = "direct_reader") -> list[bool]:
    """Record, for each large response, whether the client's ``name`` found a direct path."""
    taken: list[bool] = []
    original = getattr(rawbody if name == "direct_reader" else transport, name)

    def spy(response: Any, *length: int) -> Any:
        fill = original(response, *length)
        taken.append(fill is not None)
        return fill

    monkeypatch.setattr(f"servicewire.client.{name}", spy)
    return taken


def test_a_large_answer_arrives_whole_and_the_connection_is_kept(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = _count_direct(monkeypatch)
    big = np.random.default_rng(4).normal(size=(1500, 1000))
    site.answers["big"] = packb(big)
    site.answers["small"] = packb(3)
    with Client(site.url, KEY) as sw:
        for _ in range(3):
            back = sw.big()
            np.testing.assert_array_equal(back, big)
            assert back.flags.writeable
            assert sw.small() == 3
    assert taken == [True, True, True]
    # Six calls, one connection: the body was consumed as httpx would have.
    assert len(site.ports) == 6 and len(set(site.ports)) == 1


def test_an_answer_cut_short_is_a_transport_error_and_the_next_call_works(
    site: Site,
) -> None:
    array = np.arange(1_000_000, dtype=np.float64)
    site.answers["cut"] = packb(array)
    site.answers["whole"] = packb(array)
    site.cut_short.add("cut")
    with Client(site.url, KEY) as sw:
        with pytest.raises(TransportError, match="ended after"):
            sw.cut()
        np.testing.assert_array_equal(sw.whole(), array)
    assert len(set(site.ports)) == 2  # the broken connection was not reused


def test_progress_counts_every_byte_received_directly(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from servicewire import progress

    counted: list[int] = []

    class Counting(progress.Meter):
        def update(self, count: int) -> None:
            counted.append(count)

    monkeypatch.setattr(progress.Progress, "meter", lambda self, what, total: Counting())
    body = packb(np.ones(3_000_000))
    site.answers["ones"] = body
    with Client(site.url, KEY) as sw:
        sw.ones()
    assert sum(counted) == len(body)
    assert len(counted) > 1


def test_the_async_client_receives_directly_too(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from servicewire import AsyncClient

    taken = _count_direct(monkeypatch, "direct_receiver")
    big = np.random.default_rng(6).normal(size=2_000_000)
    site.answers["big"] = packb(big)
    site.answers["small"] = packb("ok")
    site.answers["cut"] = packb(big)
    site.cut_short.add("cut")

    async def calls() -> None:
        async with AsyncClient(site.url, KEY) as sw:
            for _ in range(3):
                back = await sw.big()
                np.testing.assert_array_equal(back, big)
                assert await sw.small() == "ok"
            with pytest.raises(TransportError, match="ended after"):
                await sw.cut()
            np.testing.assert_array_equal(await sw.big(), big)

    asyncio.run(calls())
    assert taken == [True] * 5
    # Six calls on the first connection; the one cut short is not reused.
    assert len(set(site.ports[:7])) == 1 and site.ports[7] != site.ports[0]
