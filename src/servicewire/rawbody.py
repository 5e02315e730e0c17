"""Receive a large response body straight from the blocking client's socket, around httpx.

httpx hands a body over in 64 KiB pieces, each received into new ``bytes``,
appended to h11's buffer, cut out of it again and then copied into the
destination: four copies and a few dozen Python calls per piece, which caps a
download far below what the socket delivers. For a body of known length on a
plain HTTP/1.1 connection, :func:`direct_reader` instead takes what h11 has
already buffered, receives the rest with ``recv_into`` into the destination,
and tells h11 the body is complete, so that the connection goes back to the
pool exactly as if httpx had read the body itself.

The path is taken only when every object on the way is the one this was
written against (httpx's response stream over httpcore's HTTP/1.1
connection, h11 reading a Content-Length body, a socket that is not a
TLS-in-TLS stream); anything else returns None and httpx reads as usual.
The async client needs none of this: its own transport
(:mod:`servicewire.transport`) moves large bodies as they lie.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import h11

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
