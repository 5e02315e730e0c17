"""servicewire.uvicorn: uvicorn's HTTP protocol that reads a body into the application's buffer.

uvicorn serves a small ASGI application with :class:`HttpProtocol` on
127.0.0.1, in a thread of the test process, once with each of uvicorn's
loops; requests go over real sockets. The application answers with what it
got (the body's SHA-256, its length, whether the extension was offered), so
each test checks what a client sees: the right bytes, and a connection that
goes on serving the next request in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("httptools")

from servicewire.uvicorn import RECEIVE_INTO, SEND_BUFFERS, HttpProtocol  # noqa: E402
from tests.servers import free_port  # noqa: E402

LOOPS = ["asyncio"]
try:
    import uvloop  # noqa: F401

    LOOPS.append("uvloop")
except ImportError:  # pragma: no cover - uvloop is in the server extra
    pass

# What the application saw of the last requests whose clients left early.
_left_early: list[dict[str, Any]] = []


async def _answer(send: Any, status: int, report: dict[str, Any]) -> None:
    body = json.dumps(report).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _answer_in_views(send: Any, scope: dict[str, Any]) -> None:
    """A 3 MB answer sent as memoryviews, where the server says it takes them."""
    assert SEND_BUFFERS in scope.get("extensions", {})
    data = memoryview(bytes(range(256)) * (3 * 2**12))
    headers = [(b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for start in range(0, len(data), 2**20):
        piece = data[start : start + 2**20]
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _messages(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _length(scope: dict[str, Any]) -> int:
    return int(dict(scope["headers"]).get(b"content-length", b"0"))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/into``: the whole body through the extension; ``/after-first``: the
    first message by ``receive``, the rest through the extension; ``/wrong``:
    a buffer of the wrong size first, then ``receive``; anything else: ``receive``."""
    assert scope["type"] == "http"
    extension = scope.get("extensions", {}).get(RECEIVE_INTO)
    path = scope["path"]
    report: dict[str, Any] = {"offered": extension is not None}
    if path == "/views":
        await _answer_in_views(send, scope)
        return
    if extension is None or path not in ("/into", "/after-first", "/wrong"):
        body = await _messages(receive)
    elif path == "/wrong":
        try:
            await extension["receive_into"](bytearray(1))
        except ValueError as error:
            report["error"] = str(error)
        body = await _messages(receive)
    else:
        head = b""
        if path == "/after-first":
            message = await receive()
            head = message.get("body", b"")
        buffer = bytearray(_length(scope) - len(head))
        filled = await extension["receive_into"](buffer)
        if filled < len(buffer):
            _left_early.append({"filled": len(head) + filled, "length": _length(scope)})
            return
        body = head + bytes(buffer)
        # The body is over: what comes next is the disconnect, after the answer.
        try:
            early = await asyncio.wait_for(receive(), 0.05)
            report["next"] = early["type"]
        except TimeoutError:
            report["next"] = None
    report.update(length=len(body), sha256=hashlib.sha256(body).hexdigest())
    await _answer(send, 200, report)


@pytest.fixture(scope="module", params=LOOPS)
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    number = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=number,
        http=HttpProtocol,
        loop=request.param,
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield number
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _connection(port: int) -> contextlib.closing[http.client.HTTPConnection]:
    return contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=60))


def _post(connection: http.client.HTTPConnection, path: str, body: bytes) -> dict[str, Any]:
    connection.request("POST", path, body=body)
    response = connection.getresponse()
    report = json.loads(response.read())
    assert response.status == 200, report
    return dict(report)


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("size", [0, 1_000, 3 * 2**20, 40 * 2**20])
def test_a_body_read_into_the_buffer_arrives_whole_and_the_connection_goes_on(
    port: int, size: int
) -> None:
    body = os.urandom(size)
    with _connection(port) as connection:
        for _ in range(2):  # the same kept-alive connection, twice
            report = _post(connection, "/into", body)
            assert report == {
                "offered": True,
                "next": None,
                "length": size,
                "sha256": _digest(body),
            }
        assert _post(connection, "/messages", b"small")["sha256"] == _digest(b"small")


def test_an_answer_sent_as_views_arrives_whole(port: int) -> None:
    with _connection(port) as connection:
        for _ in range(2):
            connection.request("GET", "/views")
            response = connection.getresponse()
            assert response.status == 200
            assert response.read() == bytes(range(256)) * (3 * 2**12)


def test_a_body_begun_with_receive_ends_in_the_buffer(port: int) -> None:
    body = os.urandom(5 * 2**20)
    with _connection(port) as connection:
        report = _post(connection, "/after-first", body)
        assert (report["length"], report["sha256"]) == (len(body), _digest(body))
        assert _post(connection, "/into", b"next")["sha256"] == _digest(b"next")


def test_a_buffer_of_the_wrong_size_is_refused_and_changes_nothing(port: int) -> None:
    body = os.urandom(2 * 2**20)
    with _connection(port) as connection:
        report = _post(connection, "/wrong", body)
        # Nothing was received yet: the size named is the whole body's.
        assert report["error"] == (
            f"receive_into takes a buffer of the {len(body)} bytes left of the body, not of 1"
        )
        assert (report["length"], report["sha256"]) == (len(body), _digest(body))


def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    first = os.urandom(4 * 2**20)
    second = b"after the large one"
    raw = b"".join(
        [
            b"POST /into HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(first),
            first,
            b"POST /into HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(second),
            second,
            b"GET /messages HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        ]
    )
    with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
        client.sendall(raw)
        answers = _read_all(client)
    reports = [json.loads(part) for part in _bodies(answers)]
    assert [r["sha256"] for r in reports] == [_digest(first), _digest(second), _digest(b"")]


def test_expect_100_continue_is_answered_before_the_body_is_sent(port: int) -> None:
    body = os.urandom(2**20)
    head = b"POST /into HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
        client.sendall(head % len(body))
        assert client.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        client.sendall(body + b"GET /messages HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answers = _read_all(client)
    reports = [json.loads(part) for part in _bodies(answers)]
    assert [r["sha256"] for r in reports] == [_digest(body), _digest(b"")]


def test_a_chunked_body_is_not_offered_the_extension(port: int) -> None:
    with _connection(port) as connection:
        connection.request("POST", "/into", body=iter([b"abc", b"def"]), encode_chunked=True)
        response = connection.getresponse()
        report = json.loads(response.read())
    assert report["offered"] is False and report["sha256"] == _digest(b"abcdef")


def test_a_client_leaving_half_way_through_its_body_leaves_the_server_serving(port: int) -> None:
    length = 8 * 2**20
    _left_early.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
        client.sendall(b"POST /into HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % length)
        client.sendall(os.urandom(length // 2))
        time.sleep(0.2)  # the server reads what was sent
    deadline = time.monotonic() + 10
    while not _left_early and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(_left_early) == 1
    assert _left_early[0]["length"] == length and _left_early[0]["filled"] <= length // 2
    with _connection(port) as connection:
        assert _post(connection, "/into", b"still here")["sha256"] == _digest(b"still here")


def _read_all(client: socket.socket) -> bytes:
    chunks = []
    while chunk := client.recv(2**16):
        chunks.append(chunk)
    return b"".join(chunks)


def _bodies(raw: bytes) -> list[bytes]:
    """The bodies of the HTTP/1.1 responses in ``raw``, each with a Content-Length."""
    bodies = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
        length = int(fields[b"content-length"])
        bodies.append(rest[:length])
        raw = rest[length:]
    return bodies
