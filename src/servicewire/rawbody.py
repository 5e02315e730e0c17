"""Receive a large response body straight from the connection's socket.

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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h11

Fill = Callable[[memoryview, Callable[[int], None]], int]

# Large enough that each call moves plenty; small enough for a lively progress bar.
_STEP = 8 << 20


def direct_reader(response: Any, length: int) -> Fill | None:
    """A function filling a view of ``length`` bytes from the response's socket, or None.

    The function takes the view and a callback told each step's byte count;
    it returns how many bytes it filled (fewer only if the peer closed early).
    """
    connection = _connection(getattr(response, "stream", None))
    if connection is None:
        return None
    state = getattr(connection, "_h11_state", None)
    network: Any = getattr(connection, "_network_stream", None)
    reader: Any = getattr(state, "_reader", None)
    if (
        not isinstance(state, h11.Connection)
        or type(network).__name__ != "SyncStream"
        or type(reader).__name__ != "ContentLengthReader"
        or getattr(reader, "_length", None) != length
        or state.their_state is not h11.SEND_BODY
    ):
        return None
    sock = network.get_extra_info("socket")
    receive_into = getattr(sock, "recv_into", None)
    if receive_into is None:
        return None
    request = getattr(response, "request", None)
    timeout = (getattr(request, "extensions", {}).get("timeout") or {}).get("read")

    def fill(view: memoryview, advance: Callable[[int], None]) -> int:
        filled = 0
        # First what h11 already holds (it came with the headers).
        while (event := state.next_event()) is not h11.NEED_DATA:
            if isinstance(event, h11.EndOfMessage):
                return filled
            if not isinstance(event, h11.Data):
                return filled
            size = len(event.data)
            view[filled : filled + size] = event.data
            filled += size
            advance(size)
        sock.settimeout(timeout)
        while filled < length:
            got = receive_into(view[filled : min(length, filled + _STEP)])
            if not got:
                break
            filled += got
            advance(got)
        if filled == length:
            # The body is complete: h11 moves on to the end of the message,
            # and the connection can serve the next request.
            reader._remaining = 0
            if not isinstance(state.next_event(), h11.EndOfMessage):
                raise h11.RemoteProtocolError("the response did not end after its body")
        return filled

    return fill


def _connection(stream: Any) -> Any:
    """httpcore's HTTP/1.1 connection under httpx's wrappers of a response stream."""
    # httpx's bound stream, its transport's stream, httpcore's pool stream,
    # the connection's stream, then the connection.
    for _ in range(6):
        if type(stream).__name__ == "HTTP11Connection":
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
