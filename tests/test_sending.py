"""Sending a large body from its own memory, through gunicorn's real request handler.

Each test parses a real request with gunicorn's parser over a socket pair and
hands it to gunicorn's own ``handle_request`` of the threaded worker, which
calls a small WSGI application returning :func:`servicewire.sending.pieces`.
The other end of the pair reads the HTTP response as a client would.
``Response.write`` is counted, to tell the bytes gunicorn wrote itself from
those sent straight from the segments.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from servicewire import sending
from servicewire.segments import Segment, body_size

config = pytest.importorskip("gunicorn.config", reason="gunicorn is not installed")
gthread = pytest.importorskip("gunicorn.workers.gthread")
parser = pytest.importorskip("gunicorn.http.parser")
gunicorn_wsgi = pytest.importorskip("gunicorn.http.wsgi")

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the pieces gunicorn's ``Response.write`` was given."""
    sizes: list[int] = []
    original = gunicorn_wsgi.Response.write

    def counting(self: Any, data: bytes) -> None:
        sizes.append(len(data))
        original(self, data)

    monkeypatch.setattr(gunicorn_wsgi.Response, "write", counting)
    return sizes


def _app(segments: list[Segment], wrap: Callable[[Iterator[bytes]], Iterator[bytes]] | None) -> App:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", str(body_size(segments)))])
        body = sending.pieces(segments, environ)
        return wrap(body) if wrap else body

    return app


def _serve(app: App, requests: bytes) -> tuple[bytes, list[Any]]:
    """Serve every request in ``requests`` with gunicorn's handler; what the client read."""
    server, client = socket.socketpair()
    server.settimeout(10)
    client.settimeout(10)
    worker: Any = object.__new__(gthread.ThreadWorker)
    worker.cfg = config.Config()
    worker.log = SimpleNamespace(access=lambda *a: None, debug=lambda *a: None)
    worker.wsgi = app
    worker.nr, worker.max_requests, worker.alive = 0, 1 << 30, True
    worker.keepalived_conns, worker.max_keepalived = deque(), 10
    conn = SimpleNamespace(sock=server, client=("127.0.0.1", 50000), server=("127.0.0.1", 80))
    received = bytearray()

    def read_all() -> None:
        while chunk := client.recv(1 << 20):
            received.extend(chunk)

    reader = threading.Thread(target=read_all)
    reader.start()
    responses: list[Any] = []
    try:
        client.sendall(requests)
        client.shutdown(socket.SHUT_WR)
        for request in parser.RequestParser(worker.cfg, server, conn.client):
            keep_alive = worker.handle_request(request, conn)
            responses.append(keep_alive)
            request.body.read()  # as gunicorn does before the next request
            if not keep_alive:
                break
    finally:
        server.shutdown(socket.SHUT_WR)
        reader.join(10)
        server.close()
        client.close()
    return bytes(received), responses


def _bodies(received: bytes) -> list[bytes]:
    """The bodies of the HTTP responses in ``received``, by their Content-Length."""
    bodies = []
    rest = received
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        bodies.append(rest[:length])
        rest = rest[length:]
    return bodies


GET = b"GET /data HTTP/1.1\r\nHost: test\r\n\r\n"


def _segments() -> tuple[list[Segment], bytes]:
    array = np.arange(3_000_000, dtype=np.float64)  # 24 MB
    tail = np.arange(200_000, dtype=np.int32)  # 800 KB, above one piece
    segments: list[Segment] = [
        b"head",
        memoryview(array).cast("B"),
        b"",
        b"between",
        memoryview(tail).cast("B"),
        memoryview(b"small"),
        b"end",
    ]
    expected = b"head" + array.tobytes() + b"between" + tail.tobytes() + b"small" + b"end"
    return segments, expected


def test_gunicorn_sends_the_large_segments_from_their_memory(written: list[int]) -> None:
    segments, expected = _segments()
    received, keep_alive = _serve(_app(segments, None), GET + GET)
    assert _bodies(received) == [expected, expected]
    # Both requests on one connection: gunicorn kept it alive.
    assert keep_alive == [True, True]
    # gunicorn wrote the encoder's own bytes only; every view went out directly.
    assert written == [len(b"head"), len(b"between"), len(b"end")] * 2


def test_gunicorn_counts_what_was_sent_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []
    monkeypatch.setattr(
        gunicorn_wsgi.Response,
        "close",
        lambda self: sent.append(self.sent),
    )
    segments, expected = _segments()
    received, _ = _serve(_app(segments, None), GET)
    assert _bodies(received) == [expected]
    assert sent == [len(expected)]  # what its access log reports


def test_a_body_that_starts_with_an_array_sends_a_first_piece_through_gunicorn(
    written: list[int],
) -> None:
    array = np.arange(1_000_000, dtype=np.float64)
    received, _ = _serve(_app([memoryview(array).cast("B")], None), GET)
    assert _bodies(received) == [array.tobytes()]
    assert written == [sending.PIECE]


def test_a_wrapping_iterator_gets_every_byte_itself(written: list[int]) -> None:
    # A middleware that transforms the body consumes the iterator: nothing may
    # go around it.
    segments, expected = _segments()
    received, _ = _serve(_app(segments, lambda body: (piece for piece in body)), GET)
    assert _bodies(received) == [expected]
    assert sum(written) == len(expected)


def test_http_1_0_without_keep_alive_gets_the_whole_body(written: list[int]) -> None:
    segments, expected = _segments()
    received, keep_alive = _serve(_app(segments, None), b"GET /data HTTP/1.0\r\n\r\n")
    assert _bodies(received) == [expected]
    assert keep_alive == [False]


def test_more_segments_than_the_declared_length_are_cut_as_gunicorn_cuts_them() -> None:
    array = np.arange(1_000_000, dtype=np.float64)
    declared = 4 + 3_000_000

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", str(declared))])
        return sending.pieces([b"head", memoryview(array).cast("B")], environ)

    received, _ = _serve(app, GET)
    assert _bodies(received) == [(b"head" + array.tobytes())[:declared]]


def test_without_gunicorn_every_byte_comes_from_the_iterator() -> None:
    segments, expected = _segments()
    left, right = socket.socketpair()
    with left, right:
        right.setblocking(False)
        # A socket in the environ, but the consumer is not gunicorn's handler.
        body = b"".join(sending.pieces(segments, {"gunicorn.socket": left}))
        with pytest.raises(BlockingIOError):
            right.recv(1)
    assert body == expected
    assert b"".join(sending.pieces(segments, None)) == expected
    assert max(len(piece) for piece in sending.pieces(segments, None)) <= sending.PIECE


def test_django_s_own_server_sends_the_large_segments_from_their_memory(
    live_server: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server is runserver's: wsgiref's handler under Django's.
    from wsgiref import handlers, simple_server

    from servicewire import Client

    written: list[int] = []
    counted: list[int] = []
    write, close = handlers.BaseHandler.write, simple_server.ServerHandler.close

    def counting_write(self: Any, data: bytes) -> None:
        written.append(len(data))
        write(self, data)

    def counting_close(self: Any) -> None:
        counted.append(self.bytes_sent)  # what runserver logs as the size
        close(self)

    monkeypatch.setattr(handlers.BaseHandler, "write", counting_write)
    monkeypatch.setattr(simple_server.ServerHandler, "close", counting_close)
    array = np.arange(2_000_000, dtype=np.float64)  # 16 MB
    with Client(f"{live_server.url}/services/", key) as sw:
        for _ in range(2):
            np.testing.assert_array_equal(sw.echo(value=array), array)
        assert sw.add(a=1, b=2) == 3
    large = [size for size in counted if size > array.nbytes]
    assert len(large) == 2
    assert all(size < array.nbytes + 1000 for size in large)
    assert sum(written) < 3 * 1000 + 3 * 100  # the headers' pieces and the small answer
