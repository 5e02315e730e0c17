"""Reading a body straight from gunicorn's socket, with gunicorn's own reader objects.

The objects are the ones gunicorn's parser makes for a request with a
Content-Length, over a real socket pair; what the parser has already read past
the headers sits in its buffer, as it does after parsing a real request.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIRequest

from servicewire import receiving
from servicewire.errors import BadRequest

Pair = tuple[socket.socket, socket.socket]

body_mod = pytest.importorskip("gunicorn.http.body", reason="gunicorn is not installed")
unreader_mod = pytest.importorskip("gunicorn.http.unreader")


@pytest.fixture
def pair() -> Iterator[Pair]:
    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)
    yield left, right
    left.close()
    right.close()


def _request(sock: socket.socket, length: int, held: bytes) -> tuple[WSGIRequest, object]:
    unreader = unreader_mod.SocketUnreader(sock)
    unreader.buf.write(held)  # read together with the headers
    stream = body_mod.Body(body_mod.LengthReader(unreader, length))
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/services/echo",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "CONTENT_LENGTH": str(length),
        "wsgi.input": stream,
        "gunicorn.socket": sock,
    }
    return WSGIRequest(environ), stream


def _send_later(sock: socket.socket, data: bytes, then_close: bool = False) -> threading.Thread:
    def send() -> None:
        sock.sendall(data)
        if then_close:
            sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_the_body_is_read_from_the_socket_and_the_next_request_is_left(pair: Pair) -> None:
    server, client = pair
    payload = bytes(range(256)) * 40_000  # 10 MB: many recv_into calls
    held, rest = payload[:1000], payload[1000:]
    request, stream = _request(server, len(payload), held)
    assert receiving._gunicorn_reader(request, len(payload)) is not None
    sender = _send_later(client, rest + b"GET /next HTTP/1.1\r\n")
    body = receiving.read_body(request, len(payload))
    sender.join(10)
    assert bytes(body) == payload
    # gunicorn sees the body as consumed and finds the next request intact.
    assert stream.read() == b""  # type: ignore[attr-defined]
    assert server.recv(100) == b"GET /next HTTP/1.1\r\n"


def test_bytes_held_beyond_the_body_stay_with_gunicorn(pair: Pair) -> None:
    server, _ = pair
    request, stream = _request(server, 5, b"hello" + b"POST /again")
    assert bytes(receiving.read_body(request, 5)) == b"hello"
    unreader = stream.reader.unreader  # type: ignore[attr-defined]
    assert unreader.read() == b"POST /again"


def test_a_body_cut_short_is_a_bad_request(pair: Pair) -> None:
    server, client = pair
    request, _ = _request(server, 50_000, b"x" * 10)
    sender = _send_later(client, b"y" * 20_000, then_close=True)
    with pytest.raises(BadRequest, match="Content-Length"):
        receiving.read_body(request, 50_000)
    sender.join(10)


def test_other_streams_are_read_the_portable_way() -> None:
    payload = b"z" * 3_000_000
    environ = {
        "REQUEST_METHOD": "POST",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "CONTENT_LENGTH": str(len(payload)),
        "wsgi.input": io.BytesIO(payload),
    }
    request = WSGIRequest(environ)
    assert receiving._gunicorn_reader(request, len(payload)) is None
    assert bytes(receiving.read_body(request, len(payload))) == payload


def test_a_body_already_read_by_someone_else_is_not_read_again(pair: Pair) -> None:
    server, _ = pair
    request, _ = _request(server, 4, b"abcd")
    assert request.body == b"abcd"  # middleware read it first
    assert receiving._gunicorn_reader(request, 4) is None
    assert bytes(receiving.read_body(request, 4)) == b"abcd"


@pytest.mark.django_db(transaction=True)
def test_django_s_own_server_reads_the_body_into_its_buffer(
    live_server: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from servicewire import Client

    taken: list[bool] = []
    original = receiving._buffered_reader

    def spy(request: Any) -> Any:
        fill = original(request)
        taken.append(fill is not None)
        return fill

    monkeypatch.setattr(receiving, "_buffered_reader", spy)
    array = np.random.default_rng(8).normal(size=(700, 1000))
    with Client(f"{live_server.url}/services/", key) as sw:
        np.testing.assert_array_equal(sw.echo(value=array), array)
        assert sw.add(a=2, b=3) == 5  # the connection goes on
    assert taken[0] is True
