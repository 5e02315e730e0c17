"""The physical limit: raw bytes over a loopback TCP socket, nothing else.

Run as ``python -m bench.socket_server``; it prints its port, then serves
one connection at a time. A request is one letter and a size: ``G`` asks for
that many bytes, ``P`` announces that many; the server answers ``P`` with
eight bytes once all arrived. The buffer is the same float64 array the other
servers create (so the client can check what arrived); it is made on the first
request of a size on a connection and reused by its next ones, so repeated
figures are the loopback's alone (a new connection, that is a new measurement,
makes its own: its peak memory is seen).
"""

from __future__ import annotations

import socket
import struct

import numpy as np

_HEADER = struct.Struct("!cQ")
_CHUNK = 4 << 20


def _recv_exact(conn: socket.socket, view: memoryview) -> bool:
    """Fill ``view`` from ``conn``; False when the peer closed first."""
    filled = 0
    while filled < len(view):
        got = conn.recv_into(view[filled:], min(_CHUNK, len(view) - filled))
        if not got:
            return False
        filled += got
    return True


def serve(conn: socket.socket, buffers: dict[int, memoryview]) -> None:
    """Answer requests on one connection until the client closes it."""
    header = bytearray(_HEADER.size)
    while _recv_exact(conn, memoryview(header)):
        kind, size = _HEADER.unpack(header)
        buffer = buffers.get(size)
        if buffer is None:
            buffers.clear()
            array = np.arange(size // 8, dtype=np.float64)
            buffer = buffers[size] = memoryview(array).cast("B")
        if kind == b"G":
            conn.sendall(buffer)
        elif _recv_exact(conn, buffer):
            conn.sendall(struct.pack("!Q", size))


def main() -> None:
    """Listen on 127.0.0.1 only, print the port, serve connections forever."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        with conn:
            serve(conn, {})


if __name__ == "__main__":
    main()
