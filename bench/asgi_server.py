"""uvicorn with several workers, each connection with ``TCP_NODELAY`` as it should be.

``python -m bench.asgi_server <app> --port N --workers W``: the same as
``uvicorn <app> --host 127.0.0.1 --port N --workers W --http
servicewire.uvicorn:HttpProtocol`` (supervisor and workers), with one
difference. uvicorn's supervisor binds the listening
socket itself with ``socket.socket(family)``, whose ``proto`` is 0; accepted
connections inherit it, and asyncio only sets ``TCP_NODELAY`` on a socket
whose ``proto`` is ``IPPROTO_TCP``. So with ``--workers 2`` or more and the
asyncio loop, Nagle's algorithm stays on and every response on a kept-alive
connection waits about 40 ms for the client's delayed ACK (uvicorn issue
3149; the single-process path and uvloop are not affected). Here the
listening socket says ``IPPROTO_TCP``, as the single-process path's does.
"""

from __future__ import annotations

import argparse
import socket

import uvicorn
from uvicorn.supervisors import Multiprocess


class _Config(uvicorn.Config):
    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
            sock.set_inheritable(True)
        return sock


def main() -> None:
    """Serve the application until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bench.asgi_server")
    parser.add_argument("app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--http",
        default="servicewire.uvicorn:HttpProtocol",
        help="uvicorn's --http: servicewire's protocol (the default), or httptools for uvicorn's",
    )
    args = parser.parse_args()
    config = _Config(
        args.app,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        http=args.http,
        timeout_keep_alive=300,
        timeout_graceful_shutdown=5,
        log_level="warning",
        access_log=False,
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()


if __name__ == "__main__":
    main()
