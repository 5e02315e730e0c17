"""Move a large body straight through the connection's socket, around httpx.

httpx hands a body over in 64 KiB pieces, each received into new ``bytes``,
appended to h11's buffer, cut out of it again and then copied into the
destination: four copies and a few dozen Python calls per piece, which caps a
download far below what the socket delivers. For a body of known length on a
plain HTTP/1.1 connection, :func:`direct_reader` (and its asyncio twin
:func:`async_direct_reader`) instead takes what h11 has already buffered,
receives the rest with ``recv_into`` into the destination, and tells h11 the
body is complete, so that the connection goes back to the pool exactly as if
httpx had read the body itself.

The path is taken only when every object on the way is the one this was
written against (httpx's response stream over httpcore's HTTP/1.1
connection, h11 reading a Content-Length body; for the sync client a socket
that is not a TLS-in-TLS stream, for the async one anyio's plain socket
stream on asyncio's own event loop); anything else returns None and httpx
reads as usual.

Uploads from ``httpx.AsyncClient`` have the same cost the other way round
(a piece at a time through h11, anyio and asyncio's transport, with a trip
through the event loop for each): :func:`async_direct_sender` sends a
known-length body from its own memory, in a worker thread, once httpx has
written the request head, and then tells h11 the body went out, so that the
response is read and the connection pooled as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import h11
import httpcore

Advance = Callable[[int], None]
Fill = Callable[[memoryview, Advance], int]
AsyncFill = Callable[[memoryview, Advance], Awaitable[int]]
AsyncSend = Callable[[Advance], Awaitable[None]]

# Large enough that each call moves plenty; small enough for a lively progress bar.
_STEP = 8 << 20
# A read timeout of None, as a timeout (a day).
_NO_TIMEOUT = 86400.0


class _Body:
    """The h11 side of a response body read around h11: its start and its end."""

    def __init__(self, state: h11.Connection, reader: Any, length: int) -> None:
        self.state = state
        self.reader = reader
        self.length = length

    def take_buffered(self, view: memoryview, advance: Advance) -> tuple[int, bool]:
        """Copy what h11 already holds (it came with the headers); (bytes, body over)."""
        filled = 0
        while (event := self.state.next_event()) is not h11.NEED_DATA:
            if not isinstance(event, h11.Data):
                return filled, True
            size = len(event.data)
            view[filled : filled + size] = event.data
            filled += size
            advance(size)
        return filled, False

    def finish(self, filled: int) -> None:
        if filled != self.length:
            return  # cut short: h11 still waits, so httpcore drops the connection
        # The body is complete: h11 moves on to the end of the message, and
        # the connection can serve the next request.
        self.reader._remaining = 0
        if not isinstance(self.state.next_event(), h11.EndOfMessage):
            raise h11.RemoteProtocolError("the response did not end after its body")


def _body(response: Any, length: int, network_type: str) -> tuple[_Body, Any] | None:
    connection = _connection(getattr(response, "stream", None))
    if connection is None:
        return None
    state = getattr(connection, "_h11_state", None)
    network: Any = getattr(connection, "_network_stream", None)
    reader: Any = getattr(state, "_reader", None)
    if (
        not isinstance(state, h11.Connection)
        or type(network).__name__ != network_type
        or type(reader).__name__ != "ContentLengthReader"
        or getattr(reader, "_length", None) != length
        or state.their_state is not h11.SEND_BODY
    ):
        return None
    return _Body(state, reader, length), network


def _timeout(request: Any, kind: str) -> float | None:
    """The request's ``read`` or ``write`` timeout, as httpx sets it (None: none)."""
    timeout = (getattr(request, "extensions", {}).get("timeout") or {}).get(kind)
    return float(timeout) if timeout is not None else None


def _plain_asyncio(network: Any) -> tuple[Any, asyncio.Transport, Any] | None:
    """anyio's socket stream under httpcore's, its asyncio transport and its socket:
    None unless the connection is plain TCP (no TLS) on asyncio's own transport."""
    stream: Any = getattr(network, "_stream", None)
    transport: Any = getattr(stream, "_transport", None)
    sock = network.get_extra_info("socket")
    if (
        type(stream).__name__ != "SocketStream"
        or sock is None
        or not isinstance(transport, asyncio.Transport)
        or network.get_extra_info("ssl_object") is not None
    ):
        return None
    return stream, transport, sock


def direct_reader(response: Any, length: int) -> Fill | None:
    """A function filling a view of ``length`` bytes from the response's socket, or None.

    The function takes the view and a callback told each step's byte count;
    it returns how many bytes it filled (fewer only if the peer closed early).
    """
    found = _body(response, length, "SyncStream")
    if found is None:
        return None
    body, network = found
    sock = network.get_extra_info("socket")
    receive_into = getattr(sock, "recv_into", None)
    if receive_into is None:
        return None
    timeout = _timeout(getattr(response, "request", None), "read")

    def fill(view: memoryview, advance: Advance) -> int:
        filled, over = body.take_buffered(view, advance)
        if over:
            return filled
        sock.settimeout(timeout)
        while filled < length:
            got = receive_into(view[filled : min(length, filled + _STEP)])
            if not got:
                break
            filled += got
            advance(got)
        body.finish(filled)
        return filled

    return fill


def async_direct_reader(response: Any, length: int) -> AsyncFill | None:
    """:func:`direct_reader` for ``httpx.AsyncClient`` on asyncio, or None.

    anyio keeps the transport's reading paused between its own receives, so
    once the chunks anyio has queued are taken, nothing else reads the socket.
    The rest is received in a worker thread, through a duplicate of the
    socket's descriptor (asyncio lends out no readable socket and refuses to
    watch one its transport owns), leaving the event loop free meanwhile.
    """
    found = _body(response, length, "AnyIOStream")
    plain = _plain_asyncio(found[1]) if found is not None else None
    if found is None or plain is None:
        return None
    body = found[0]
    stream, transport, sock = plain
    protocol: Any = getattr(stream, "_protocol", None)
    if not hasattr(protocol, "read_queue") or transport.is_reading():
        return None
    timeout = _timeout(getattr(response, "request", None), "read")

    async def fill(view: memoryview, advance: Advance) -> int:
        filled, over = body.take_buffered(view, advance)
        if over:
            return filled
        # Then what anyio has received but not handed on.
        queue = protocol.read_queue
        while queue and filled < length:
            chunk = queue.popleft()
            size = min(len(chunk), length - filled)
            view[filled : filled + size] = chunk[:size]
            if size < len(chunk):
                queue.appendleft(chunk[size:])
            filled += size
            advance(size)
        if not queue:
            protocol.read_event.clear()
        if filled < length and not transport.is_closing():
            filled += await asyncio.to_thread(
                _receive_rest, sock.fileno(), view[filled:], timeout, advance
            )
        body.finish(filled)
        return filled

    return fill


def _receive_rest(fd: int, view: memoryview, timeout: float | None, advance: Advance) -> int:
    # A timeout, never blocking mode: the descriptor's non-blocking flag is
    # shared with the transport's, which must keep it.
    with socket.socket(fileno=os.dup(fd)) as raw:
        raw.settimeout(timeout if timeout is not None else _NO_TIMEOUT)
        filled = 0
        while filled < len(view):
            got = raw.recv_into(view[filled : filled + _STEP])
            if not got:
                break
            filled += got
            advance(got)
        return filled


def async_direct_sender(
    transport: Any, stream: object, pieces: Sequence[bytes | memoryview]
) -> AsyncSend | None:
    """A function sending ``pieces`` as the body ``stream`` stands for, or None.

    To be called by ``stream`` (an ``httpx.AsyncByteStream``) when httpcore
    starts iterating it: the head is then written, and the connection is the
    one ``transport``'s pool assigned to the request carrying ``stream``.
    The function takes a callback told each step's byte count. It raises
    httpcore's ``WriteError`` when the connection breaks (httpcore then reads
    whatever answer the server managed to send, as after any failed write)
    and ``WriteTimeout`` when a wait to send outlasts the write timeout.
    """
    views = [memoryview(piece) for piece in pieces]
    if not all(view.c_contiguous for view in views):
        return None
    views = [view.cast("B") if view.format != "B" or view.ndim != 1 else view for view in views]
    length = sum(len(view) for view in views)
    request, connection = _assigned(transport, stream)
    if connection is None:
        return None
    state = getattr(connection, "_h11_state", None)
    writer: Any = getattr(state, "_writer", None)
    network: Any = getattr(connection, "_network_stream", None)
    plain = _plain_asyncio(network) if type(network).__name__ == "AnyIOStream" else None
    if (
        plain is None
        or not isinstance(state, h11.Connection)
        or state.our_state is not h11.SEND_BODY
        or type(writer).__name__ != "ContentLengthWriter"
        or getattr(writer, "_length", None) != length
    ):
        return None
    _, asyncio_transport, sock = plain
    # Anything of the head still queued would go out after the body.
    if asyncio_transport.is_closing() or asyncio_transport.get_write_buffer_size():
        return None
    timeout = _timeout(request, "write")

    async def send(advance: Advance) -> None:
        # The worker owns its duplicate descriptor and always runs to the end;
        # on cancellation the socket is shut down under it, which ends it at
        # once (the connection is then closed: h11 never saw the body end).
        raw = socket.socket(fileno=os.dup(sock.fileno()))
        done = asyncio.get_running_loop().run_in_executor(
            None, _send_all, raw, views, timeout, advance
        )
        try:
            sent: int = await asyncio.shield(done)
        except BaseException:
            if not done.done():
                done.add_done_callback(_retrieve)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            raise
        writer._length -= sent  # now 0: h11 lets httpcore end the message

    return send


def _send_all(
    raw: socket.socket, views: list[memoryview], timeout: float | None, advance: Advance
) -> int:
    sent = 0
    with raw:
        # A timeout, never blocking mode: see _receive_rest.
        raw.settimeout(timeout if timeout is not None else _NO_TIMEOUT)
        try:
            for view in views:
                start = 0
                while start < len(view):
                    got = raw.send(view[start : start + _STEP])
                    start += got
                    sent += got
                    advance(got)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(exc) from exc
        except OSError as exc:
            raise httpcore.WriteError(exc) from exc
    return sent


def _retrieve(future: asyncio.Future[int]) -> None:
    # The caller is gone; an error here (the shut-down socket's) is expected.
    future.exception()


def _assigned(transport: Any, stream: object) -> tuple[Any, Any]:
    """The httpcore request carrying ``stream`` in ``transport``'s pool, and its connection."""
    pool = getattr(transport, "_pool", None)
    for pool_request in getattr(pool, "_requests", ()):
        request = getattr(pool_request, "request", None)
        if getattr(request, "stream", None) is stream:
            connection = getattr(getattr(pool_request, "connection", None), "_connection", None)
            if type(connection).__name__ == "AsyncHTTP11Connection":
                return request, connection
            break
    return None, None


def _connection(stream: Any) -> Any:
    """httpcore's HTTP/1.1 connection under httpx's wrappers of a response stream."""
    # httpx's bound stream, its transport's stream, httpcore's pool stream,
    # the connection's stream, then the connection.
    for _ in range(6):
        if type(stream).__name__ in ("HTTP11Connection", "AsyncHTTP11Connection"):
            return stream
        stream = next(
            (
                getattr(stream, name)
                for name in ("_stream", "_httpcore_stream", "_connection")
                if hasattr(stream, name)
            ),
            None,
        )
    return None
