"""Send a large response body from the memory it already lives in.

A WSGI server takes only ``bytes`` from the application (gunicorn and
``wsgiref`` check), so every piece of an array is first copied into a new
``bytes`` object, then copied again by the kernel into the socket. For an
80 MB array that extra pass, and the fresh pages it touches, cost as much as
the sending itself.

Two servers get the body without that copy, each once it has sent the status
line, the headers and a first piece itself; the rest goes out straight from
the segments' memory, and the server's own count of bytes sent is kept up to
date, so that its length bookkeeping, keep-alive and access log stay as if it
had written them:

- **gunicorn** leaves the connection's socket in ``environ["gunicorn.socket"]``
  and writes each piece the application yields before asking for the next:
  the rest is sent with ``sendall`` on that socket.
- **Django's own server** (``runserver``, ``servicewire demo``, the test
  server) is ``wsgiref``'s handler: the rest goes through its unbuffered
  ``_write`` to the socket.

This is done only when the one asking for the next piece is that server's own
code, with its own response object, framing the body by ``Content-Length``:
no middleware stands between them to transform the body, and the connection
speaks HTTP/1.x. Anything else (another server, a wrapping middleware,
HTTP/2, chunked framing) gets the same bytes the portable way.

Under :mod:`servicewire.asgi` the body is an asynchronous iterator of views
instead (:func:`body` chooses), which the ASGI handler sends as messages.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import FrameType
from typing import Any
from wsgiref.handlers import SimpleHandler

from servicewire.segments import Segment

# The size of the pieces yielded the portable way: they stay in the CPU cache
# and in the allocator's heap instead of costing fresh pages each.
PIECE = 512 * 1024
# Set by servicewire.asgi while it serves a request: a large body is then an
# asynchronous iterator, which Django's ASGI handler streams as it comes
# instead of collecting it whole first.
under_asgi: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "servicewire_under_asgi", default=False
)
# Direct writes go in slices of this size, so that the server's count of bytes
# sent stays close to the truth if the client goes away midway.
_DIRECT_SLICE = 8 << 20


def body(
    segments: list[Segment], environ: Mapping[str, Any] | None
) -> Iterator[bytes] | AsyncIterator[Segment]:
    """The streamed body made of ``segments``, for the server serving this request."""
    return async_pieces(segments) if under_asgi.get() else pieces(segments, environ)


async def async_pieces(segments: list[Segment]) -> AsyncIterator[Segment]:
    """The segments in pieces of at most :data:`PIECE` bytes, for an ASGI server.

    Django's response makes ``bytes`` of each view (one copy, as under WSGI),
    except under a server that sends views as they are
    (:mod:`servicewire.uvicorn`); each piece is one message to the server.
    """
    for segment in segments:
        if isinstance(segment, bytes):
            yield segment
            continue
        for start in range(0, len(segment), PIECE):
            yield segment[start : start + PIECE]


def pieces(segments: list[Segment], environ: Mapping[str, Any] | None) -> Iterator[bytes]:
    """The body made of ``segments``, for a WSGI server; see the module."""
    send: Callable[[memoryview], None] | None = None
    ask = environ is not None  # whether the server is still to be recognised
    yielded = False
    for segment in segments:
        if isinstance(segment, bytes):
            if segment:
                yield segment
                yielded = True
            continue
        view = memoryview(segment).cast("B")
        offset = 0
        while offset < view.nbytes:
            if ask and yielded and view.nbytes - offset > PIECE:
                # Resumed by whoever wrote what was yielded: which server is it?
                send = _direct_sender(sys._getframe(1), environ or {})
                ask = False
            if send is not None:
                send(view[offset:])
                break
            yield bytes(view[offset : offset + PIECE])
            yielded = True
            offset += PIECE


def _direct_sender(
    frame: FrameType | None, environ: Mapping[str, Any]
) -> Callable[[memoryview], None] | None:
    """A function sending a view around the server that ``frame`` runs, or None."""
    if frame is None:
        return None
    module = str(frame.f_globals.get("__name__", ""))
    if frame.f_code.co_name == "handle_request" and module.startswith("gunicorn.workers."):
        return _gunicorn_sender(frame.f_locals.get("resp"), environ.get("gunicorn.socket"))
    if frame.f_code.co_name == "finish_response" and module == "wsgiref.handlers":
        return _wsgiref_sender(frame.f_locals.get("self"))
    return None


def _gunicorn_sender(response: Any, sock: Any) -> Callable[[memoryview], None] | None:
    if sock is None:
        return None
    kind = type(response)
    if kind.__module__ != "gunicorn.http.wsgi" or kind.__name__ != "Response":
        return None
    version = getattr(getattr(response, "req", None), "version", None)
    if (
        getattr(response, "sock", None) is not sock
        or getattr(response, "headers_sent", False) is not True
        or getattr(response, "chunked", True) is not False
        or not isinstance(getattr(response, "response_length", None), int)
        or not isinstance(getattr(response, "sent", None), int)
        or getattr(response, "_omits_body", True) is not False
        or getattr(response, "upgrade", True) is not False
        or not isinstance(version, tuple)
        or version >= (2, 0)
    ):
        return None
    connection: Any = sock

    def send(view: memoryview) -> None:
        # Never more than the declared length, as gunicorn's own write.
        view = view[: max(0, response.response_length - response.sent)]
        for start in range(0, view.nbytes, _DIRECT_SLICE):
            part = view[start : start + _DIRECT_SLICE]
            connection.sendall(part)
            response.sent += part.nbytes

    return send


def _wsgiref_sender(found: object) -> Callable[[memoryview], None] | None:
    """Django's own server (``runserver``, the test server) is ``wsgiref``'s handler."""
    if not isinstance(found, SimpleHandler):
        return None
    handler: Any = found  # its bookkeeping (headers_sent, bytes_sent) is not in the stubs
    if handler.headers_sent is not True:
        return None
    headers = handler.headers
    environ = handler.environ
    try:
        length = int(headers["Content-Length"]) if headers is not None else -1
    except (TypeError, ValueError):
        return None
    if length < 0 or environ is None or environ.get("REQUEST_METHOD") == "HEAD":
        return None

    def send(view: memoryview) -> None:
        view = view[: max(0, length - handler.bytes_sent)]
        for start in range(0, view.nbytes, _DIRECT_SLICE):
            part = view[start : start + _DIRECT_SLICE]
            handler._write(part)
            handler.bytes_sent += part.nbytes
        handler._flush()

    return send
