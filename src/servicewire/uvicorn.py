"""uvicorn's HTTP protocol, reading a large call body from the socket straight into its buffer.

::

    uvicorn mysite.asgi:application --http servicewire.uvicorn:HttpProtocol

An ASGI server hands a request body to the application as ``bytes``
messages. With uvicorn's httptools protocol each piece is copied four times
on its way (out of the read buffer, out of the parser, into the cycle's
``bytearray``, out of it into the message) and the application copies it a
fifth time into the buffer its arrays are decoded from, so an 80 MB upload
ran at two thirds of the gunicorn figure, where servicewire's WSGI view reads
the socket into that buffer itself.

:class:`HttpProtocol` serves HTTP with uvicorn's httptools protocol, with one
addition, an ASGI extension: the scope of a request whose body has a ``Content-Length``
carries ``scope["extensions"]["servicewire.receive_into"]["receive_into"]``,
an async function that fills a writable buffer with the rest of the body and
returns how many bytes it wrote (fewer only if the client left). The bytes
already parsed are copied in; the rest is read by the event loop from the
socket into the buffer (``asyncio.BufferedProtocol``), past the parser, which
is replaced by a new one for the next request on the connection. Every
scope also carries ``scope["extensions"]["servicewire.send_buffers"]``: the
body of a response message may be any bytes-like object, which the loop
sends from its own memory (uvicorn writes it to the transport as it is), so
a large answer goes out as views of its arrays instead of ``bytes`` copies.
:mod:`servicewire.asgi` uses it for large call bodies; every other request,
and every application that does not look for the extension, is served
exactly as by uvicorn's own protocol. Works with both of uvicorn's loops
(uvloop and asyncio).

It extends uvicorn's own class and uses attributes of it and of its request
cycle that uvicorn does not promise to keep: ``tests/test_uvicorn.py`` runs
against the installed uvicorn, on both loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any, Final

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

__all__ = ["RECEIVE_INTO", "SEND_BUFFERS", "HttpProtocol"]

#: In the scope of a request with a ``Content-Length``: reads the rest of
#: the body straight into the application's buffer.
RECEIVE_INTO: Final = "servicewire.receive_into"

#: In every scope: ``http.response.body`` messages may carry any bytes-like
#: object (a ``memoryview`` of an array), sent without a copy into ``bytes``.
SEND_BUFFERS: Final = "servicewire.send_buffers"

#: The protocol's own read buffer for headers and small bodies (uvloop's read size).
READ_SIZE: Final = 256 * 1024


class _Body:
    """How much of one request's body has come so far."""

    __slots__ = ("length", "seen")

    def __init__(self, length: int) -> None:
        self.length = length
        self.seen = 0  # bytes of the body read from the socket, parsed or not


class _DirectRead:
    """A read of body bytes from the socket into the application's buffer."""

    __slots__ = ("body", "cycle", "done", "filled", "target")

    def __init__(
        self,
        cycle: RequestResponseCycle,
        body: _Body,
        target: memoryview,
        done: asyncio.Future[None],
    ) -> None:
        self.cycle = cycle
        self.body = body
        self.target = target
        self.filled = 0
        self.done = done


class HttpProtocol(asyncio.BufferedProtocol):
    """uvicorn's httptools protocol, with the ``servicewire.receive_into`` and
    ``servicewire.send_buffers`` extensions.

    uvloop hands a protocol the buffers it reads into only if it is no
    ``asyncio.Protocol``, which uvicorn's is: so this one holds uvicorn's,
    feeds it what it reads into its own buffer, and reads a body on the
    application's request into the application's buffer.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._http = _Parsing(self, config, server_state, app_state, _loop)
        self._read = memoryview(bytearray(READ_SIZE))
        self._body: _Body | None = None
        self._direct: _DirectRead | None = None

    # The transport's calls, for uvicorn's protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._http.connection_made(transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        direct, self._direct = self._direct, None
        self._http.connection_lost(exc)
        if direct is not None and not direct.done.done():
            direct.done.set_result(None)

    def eof_received(self) -> None:
        self._http.eof_received()

    def pause_writing(self) -> None:
        self._http.pause_writing()

    def resume_writing(self) -> None:
        self._http.resume_writing()

    # asyncio.BufferedProtocol: the loop reads into the buffer handed out here.

    def get_buffer(self, sizehint: int) -> memoryview:
        direct = self._direct
        if direct is not None:
            return direct.target[direct.filled :]
        return self._read

    def buffer_updated(self, nbytes: int) -> None:
        direct = self._direct
        if direct is None:
            # httptools reads any buffer; what it hands on are copies.
            self._http.data_received(self._read[:nbytes])  # type: ignore[arg-type]
            return
        self._http._unset_keepalive_if_required()
        direct.filled += nbytes
        direct.body.seen += nbytes
        if direct.filled == len(direct.target):
            # The target is the rest of the body: the body is all read.
            self._direct = None
            self._body_read_past_parser(direct.cycle)
            if not direct.done.done():
                direct.done.set_result(None)

    def _body_read_past_parser(self, cycle: RequestResponseCycle) -> None:
        # The parser still waits for the body read past it: the next request
        # on this connection gets a parser of its own, and the cycle is told
        # its body is over. Its message event stays clear, as after a
        # ``receive`` of the last piece: what the application receives next
        # is the disconnect.
        parser = httptools.HttpRequestParser(self._http)
        with contextlib.suppress(AttributeError):  # httptools < 0.6.3, as in uvicorn's own
            parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self._http.parser = parser
        cycle.more_body = False

    # From the parser, through uvicorn's protocol.

    def _headers_complete(self) -> None:
        http = self._http
        cycle = http.cycle
        self._body = None
        if cycle is None or cycle.scope is not http.scope:
            return  # an upgrade: no cycle of its own
        extensions = http.scope.setdefault("extensions", {})
        # uvicorn writes a message's body to the transport as it is, and the
        # loop sends any buffer: a view of an array needs no bytes copy.
        extensions[SEND_BUFFERS] = {}
        length = _fixed_length(http.headers)
        if length is None:
            return  # no body of known length
        body = self._body = _Body(length)
        extensions[RECEIVE_INTO] = {
            "receive_into": functools.partial(self._receive_into, cycle, body)
        }

    def _body_parsed(self, nbytes: int) -> None:
        if self._body is not None:
            self._body.seen += nbytes

    # The extension.

    async def _receive_into(self, cycle: RequestResponseCycle, body: _Body, buffer: Any) -> int:
        """Fill ``buffer`` with the rest of the body; the number of bytes written."""
        target = memoryview(buffer).cast("B")
        transport = self._http.transport
        if cycle.waiting_for_100_continue and not transport.is_closing():
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False
        parsed = len(cycle.body)
        unread = body.length - body.seen
        if len(target) != parsed + unread:
            raise ValueError(
                f"receive_into takes a buffer of the {parsed + unread} bytes left of the body,"
                f" not of {len(target)}"
            )
        if self._direct is not None:
            raise RuntimeError("receive_into is already reading this connection")
        target[:parsed] = cycle.body
        cycle.body = bytearray()
        cycle.message_event.clear()
        if unread == 0 or cycle.disconnected or cycle.response_complete:
            return parsed
        # Only the request the parser is in can have unread bytes.
        direct = _DirectRead(cycle, body, target[parsed:], self._http.loop.create_future())
        self._direct = direct
        self._http.flow.resume_reading()
        try:
            await direct.done
        finally:
            if self._direct is direct:
                # Given up half way (cancelled): the parser can no longer
                # tell where this body ends, so neither can the connection.
                self._direct = None
                transport.close()
        return parsed + direct.filled


class _Parsing(HttpToolsProtocol):
    """uvicorn's protocol, telling :class:`HttpProtocol` what its parser found."""

    def __init__(self, outer: HttpProtocol, *args: Any) -> None:
        super().__init__(*args)
        self._outer = outer

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._outer._headers_complete()

    def on_body(self, body: bytes) -> None:
        self._outer._body_parsed(len(body))
        super().on_body(body)


def _fixed_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's ``Content-Length``, or None for a chunked body or none at all."""
    length = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length" and value.isdigit():
            length = int(value)
    return length
