"""Send a large response body from the memory it already lives in.

A WSGI server takes only ``bytes`` from the application (gunicorn and
``wsgiref`` check), so every piece of an array is first copied into a new
``bytes`` object, then copied again by the kernel into the socket. For an
80 MB array that extra pass, and the fresh pages it touches, cost as much as
the sending itself.

Under gunicorn the copy is avoided. Its worker leaves the connection's socket
in ``environ["gunicorn.socket"]`` and writes each piece the application
yields before asking for the next. Once gunicorn has sent the status line,
the headers and a first piece, the rest of the body goes out with
``sendall`` straight from the segments' memory, and gunicorn's response is
told how many bytes were sent, so that its length bookkeeping, its keep-alive
and its access log stay as if it had written them.

This is done only when the one asking for the next piece is gunicorn's own
request handler, with its own response object for this socket, framing the
body by ``Content-Length``: no middleware stands between them to transform
the body, and the connection speaks HTTP/1.x. Anything else (another server,
a wrapping middleware, HTTP/2, chunked framing) gets the same bytes the
portable way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any

from servicewire.segments import Segment

# The size of the pieces yielded the portable way: they stay in the CPU cache
# and in the allocator's heap instead of costing fresh pages each.
PIECE = 512 * 1024
# Direct writes go in slices of this size, so that gunicorn's count of bytes
# sent stays close to the truth if the client goes away midway.
_DIRECT_SLICE = 8 << 20


def pieces(segments: list[Segment], environ: Mapping[str, Any] | None) -> Iterator[bytes]:
    """The body made of ``segments``, for a WSGI server; under gunicorn, see the module."""
    sock = environ.get("gunicorn.socket") if environ else None
    response: Any = None  # gunicorn's response, once it is known that writing past it is safe
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
            if sock is not None and yielded and view.nbytes - offset > PIECE:
                # Resumed by whoever wrote what was yielded: is it gunicorn?
                response = _gunicorn_response(sys._getframe(1), sock)
                sock = None  # asked once
            if response is not None:
                _send_directly(response, view[offset:])
                break
            yield bytes(view[offset : offset + PIECE])
            yielded = True
            offset += PIECE


def _gunicorn_response(frame: FrameType | None, sock: Any) -> Any:
    """gunicorn's response for ``sock`` if ``frame`` is gunicorn's handler writing it, else None."""
    if frame is None or frame.f_code.co_name != "handle_request":
        return None
    if not str(frame.f_globals.get("__name__", "")).startswith("gunicorn.workers."):
        return None
    response = frame.f_locals.get("resp")
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
    return response


def _send_directly(response: Any, view: memoryview) -> None:
    # Never more than the declared length, as gunicorn's own write.
    view = view[: max(0, response.response_length - response.sent)]
    for start in range(0, view.nbytes, _DIRECT_SLICE):
        part = view[start : start + _DIRECT_SLICE]
        response.sock.sendall(part)
        response.sent += part.nbytes
