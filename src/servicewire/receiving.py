"""Read a request body of known length straight into the buffer it decodes from.

The portable way, ``request.read()`` in pieces, hands back each piece as new
``bytes`` that are then copied into the buffer; under gunicorn each piece has
also passed through two ``BytesIO`` buffers on its way. For a large array that
is several copies of the payload where one (the kernel's) is enough, so these
servers get a direct path:

- **gunicorn**: the connection's socket is in ``environ["gunicorn.socket"]``.
  What gunicorn's parser has already read past the headers is taken from its
  buffer, the rest is received with ``recv_into`` into the destination, and
  gunicorn's reader is told the body is consumed, so that keep-alive goes on
  exactly as if the application had read it. The path is taken only when the
  objects are exactly the ones this was written against and nothing has read
  the body yet; anything else falls back to the portable way.
- **Django's own server** (``runserver``, ``servicewire demo``, the test
  server): ``readinto`` on the connection's buffered reader, under Django's
  ``LimitedStream`` wrappers, which are then told what was read.
- **an ASGI server** through :mod:`servicewire.asgi`, which receives the body
  into the buffer itself and leaves it on the request as ``servicewire_body``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial
from typing import Any

from django.http import HttpRequest

from servicewire.errors import BadRequest
from servicewire.segments import receive_buffer

_READ_CHUNK = 1 << 20


def read_body(request: HttpRequest, length: int) -> bytearray | memoryview:
    """The request's body of ``length`` bytes (already checked against the limit)."""
    ready = getattr(request, "servicewire_body", None)
    if ready is not None and len(ready) == length:
        return ready  # type: ignore[no-any-return]
    body = receive_buffer(length)
    view = memoryview(body).cast("B")
    fill = (
        _gunicorn_reader(request, length)
        or _buffered_reader(request)
        or partial(_read_portably, request)
    )
    filled = fill(view)
    if filled < length:
        raise BadRequest("the body ended before Content-Length bytes arrived")
    return body


def _read_portably(request: HttpRequest, view: memoryview) -> int:
    filled = 0
    length = len(view)
    while filled < length:
        chunk = request.read(min(_READ_CHUNK, length - filled))
        if not chunk:
            break
        view[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    return filled


def _gunicorn_reader(request: HttpRequest, length: int) -> Callable[[memoryview], int] | None:
    """A function filling a view from gunicorn's socket, or None if not applicable."""
    environ = getattr(request, "environ", None)
    if not environ or length <= 0 or getattr(request, "_read_started", True):
        return None
    sock: Any = environ.get("gunicorn.socket")
    stream: Any = environ.get("wsgi.input")
    if sock is None or not _is(stream, "gunicorn.http.body", "Body"):
        return None
    reader: Any = getattr(stream, "reader", None)
    unreader: Any = getattr(reader, "unreader", None)
    held = getattr(unreader, "buf", None)
    stream_buf = getattr(stream, "buf", None)
    receive_into: Callable[..., int] | None = getattr(sock, "recv_into", None)
    if (
        not _is(reader, "gunicorn.http.body", "LengthReader")
        or getattr(unreader, "sock", None) is not sock
        or not isinstance(held, io.BytesIO)
        or not isinstance(stream_buf, io.BytesIO)
        or stream_buf.getbuffer().nbytes != 0
        or getattr(reader, "length", None) != length
        or receive_into is None
    ):
        return None

    def fill(view: memoryview) -> int:
        # Django's stream wrapper is bypassed: mark the body as read, as
        # request.read() would have.
        request._read_started = True  # type: ignore[attr-defined]
        already = held.getvalue()
        filled = min(len(already), length)
        view[:filled] = already[:filled]
        # Bytes beyond this body (a pipelined request) stay for gunicorn.
        unreader.buf = io.BytesIO()
        unreader.buf.write(already[filled:])
        try:
            while filled < length:
                got = receive_into(view[filled:], length - filled)
                if not got:
                    break
                filled += got
        except BaseException:
            # Where the next request starts is now unknown: gunicorn must
            # close the connection instead of reading on.
            stream.failed = True
            raise
        finally:
            reader.length = length - filled
        return filled

    return fill


def _buffered_reader(request: HttpRequest) -> Callable[[memoryview], int] | None:
    """A function filling a view with ``readinto`` under Django's own server, or None.

    ``runserver``, ``servicewire demo`` and the test server hand the body over
    as Django's ``LimitedStream`` around the connection's buffered reader
    (twice: the server's, then the request's). ``readinto`` fills the
    destination straight from the socket once the reader's small buffer is
    drained; both streams are then told how much was read, as if they had
    read it, so the server's end-of-request drain finds nothing left.
    """
    if getattr(request, "_read_started", True):
        return None
    streams: list[Any] = []
    stream: Any = getattr(request, "_stream", None)
    while _is(stream, "django.core.handlers.wsgi", "LimitedStream") and len(streams) < 4:
        streams.append(stream)
        stream = getattr(getattr(stream, "_read", None), "__self__", None)
    if not streams or type(stream) is not io.BufferedReader:
        return None
    if any(getattr(limited, "_pos", None) != 0 for limited in streams):
        return None
    reader: io.BufferedReader = stream

    def fill(view: memoryview) -> int:
        request._read_started = True  # type: ignore[attr-defined]
        filled = 0
        try:
            while filled < len(view):
                got = reader.readinto(view[filled : filled + _READ_CHUNK * 8])
                if not got:
                    break
                filled += got
        finally:
            for limited in streams:
                limited._pos += filled
        return filled

    return fill


def _is(obj: Any, module: str, name: str) -> bool:
    kind = type(obj)
    return kind.__module__ == module and kind.__name__ == name
