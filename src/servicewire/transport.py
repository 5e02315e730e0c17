"""AsyncClient's own HTTP/1.1 connections: plain HTTP on the running event loop.

httpx's default async transport (httpcore over anyio) spends about twice the
client's CPU of the blocking one on every small call: locks, cancel scopes
and library look-ups around each read and write, and a trip through an
asyncio transport and anyio's queue for every piece of a body. On a machine
where the client shares its cores with the server, that time is taken from
the server. :class:`AsyncTransport` keeps its connections itself: each call is
one non-blocking ``send`` of the request and, when the answer is not there
yet, one wait for the socket to become readable on the running loop; h11
parses every response head. Large bodies move between the socket and the
caller's memory as they lie: an upload made of buffers
(:class:`DirectBody`) is sent from them with no copy, and a response of known
length can be received straight into the caller's buffer
(:func:`direct_receiver`).

Only plain ``http://`` URLs are served here; ``https://`` goes to httpx's
own transport, given as ``fallback``. A client whose environment names a
proxy (``HTTP_PROXY`` and its kin) does not use this transport at all, so
that httpx routes it as it would without servicewire.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final

import h11
import httpx

__all__ = ["AsyncTransport", "DirectBody", "direct_receiver"]

Advance = Callable[[int], None]
Receiver = Callable[[memoryview, Advance], Awaitable[int]]

#: Idle connections kept per origin, and how long one may wait for its next call.
MAX_IDLE: Final = 20
IDLE_EXPIRY: Final = 5.0

# One receive for a response head and small bodies.
_READ_SIZE: Final = 64 * 1024
# Large enough that each system call moves plenty; small enough for a lively progress bar.
_STEP: Final = 8 << 20
# Where extensions carry the response's direct receiver.
_RECEIVER: Final = "servicewire.receive_into"


class DirectBody:
    """A request body made of buffers the transport may send as they lie.

    A body stream (an ``httpx.AsyncByteStream``) that also derives from this
    class is sent from :meth:`buffers`, with :meth:`sent` told each step's
    byte count and :meth:`finished` called once all of it is out; otherwise
    it is iterated like any stream.
    """

    def buffers(self) -> Sequence[memoryview] | None:
        """The body as 1-dimensional byte views, or None to be iterated instead."""
        return None

    def sent(self, count: int) -> None:
        """``count`` more bytes of the body went out."""

    def finished(self) -> None:
        """The whole body went out."""


def direct_receiver(response: httpx.Response) -> Receiver | None:
    """A function receiving the body of ``response`` into a view, or None.

    Offered for a response of this transport whose body has a
    ``Content-Length`` and no content encoding, before any of the body was
    read. The function fills the view (of the body's length) and returns how
    many bytes arrived: fewer only when the server closed early, after which
    the connection is dropped.
    """
    receiver = response.extensions.get(_RECEIVER)
    return receiver if callable(receiver) else None


class _Closed(Exception):
    """The peer closed the connection."""


class _Connection:
    """One TCP connection and its h11 state, used by one exchange at a time."""

    def __init__(self, sock: socket.socket, origin: tuple[str, int]) -> None:
        self.sock = sock
        self.origin = origin
        self.state = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self._buffer = bytearray(_READ_SIZE)
        self._view = memoryview(self._buffer)

    @classmethod
    async def open(cls, origin: tuple[str, int], timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        host, port = origin
        async with asyncio.timeout(timeout):
            addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            last: OSError | None = None
            for family, kind, proto, _, address in addresses:
                sock = socket.socket(family, kind, proto)
                try:
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    await loop.sock_connect(sock, address)
                except OSError as exc:
                    sock.close()
                    last = exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                return cls(sock, origin)
        raise last or OSError(f"no address found for {host}")

    def reusable(self, now: float) -> bool:
        """Whether an idle connection can carry the next call: open, quiet, not expired."""
        if now - self.idle_since > IDLE_EXPIRY:
            return False
        try:
            # Anything readable on an idle connection is its end (or garbage).
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()

    async def send(self, data: bytes | memoryview, timeout: float | None, advance: Advance) -> None:
        view = memoryview(data)
        start = 0
        while start < len(view):
            try:
                count = self.sock.send(view[start : start + _STEP])
            except BlockingIOError:
                await self._wait(writable=True, timeout=timeout)
                continue
            start += count
            advance(count)

    async def receive(self, view: memoryview, timeout: float | None) -> int:
        """Receive into ``view``; 0 when the peer closed."""
        while True:
            try:
                return self.sock.recv_into(view)
            except BlockingIOError:
                await self._wait(writable=False, timeout=timeout)

    async def next_event(self, timeout: float | None) -> Any:
        """h11's next event of the response, receiving as needed."""
        while True:
            event = self.state.next_event()
            if event is not h11.NEED_DATA:
                return event
            count = await self.receive(self._view, timeout)
            self.state.receive_data(bytes(self._view[:count]))

    async def _wait(self, *, writable: bool, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self.sock.fileno()
        if writable:
            loop.add_writer(fd, _settle, ready)
        else:
            loop.add_reader(fd, _settle, ready)
        timer = loop.call_later(timeout, _expire, ready) if timeout is not None else None
        try:
            await ready
        finally:
            if writable:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)
            if timer is not None:
                timer.cancel()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _timeouts(request: httpx.Request) -> dict[str, float | None]:
    timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
    return timeouts


def _keeps_alive(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return not any(
        name.lower() == b"connection" and b"close" in value.lower() for name, value in headers
    )


def _ignore(count: int) -> None:
    pass


class _ResponseBody(httpx.AsyncByteStream):
    """A response's body, read from its connection; the connection is pooled after it."""

    def __init__(
        self,
        transport: AsyncTransport,
        connection: _Connection,
        request: httpx.Request,
        keep_alive: bool,
    ) -> None:
        self._transport = transport
        self._connection: _Connection | None = connection
        self._request = request
        self._timeout = _timeouts(request).get("read")
        self._keep_alive = keep_alive
        self._started = False
        self._complete = False
        self._fresh = False  # a direct receive left the connection a new h11 state

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None or self._started:
            raise httpx.StreamConsumed()
        self._started = True
        with _mapped(self._request, httpx.ReadError, httpx.ReadTimeout):
            while True:
                event = await connection.next_event(self._timeout)
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._complete = True
                    return
                else:
                    raise httpx.RemoteProtocolError(
                        f"unexpected {type(event).__name__} in a response body",
                        request=self._request,
                    )

    async def receive_into(self, view: memoryview, advance: Advance) -> int:
        """Fill ``view`` with the whole body (see :func:`direct_receiver`)."""
        connection = self._connection
        if connection is None or self._started:
            raise httpx.StreamConsumed()
        self._started = True
        filled = 0
        length = len(view)
        state = connection.state
        with _mapped(self._request, httpx.ReadError, httpx.ReadTimeout):
            # First what h11 received with the head.
            while (event := state.next_event()) is not h11.NEED_DATA:
                if not isinstance(event, h11.Data):
                    self._complete = filled == length
                    return filled
                size = len(event.data)
                view[filled : filled + size] = event.data
                filled += size
                advance(size)
            while filled < length:
                count = await connection.receive(
                    view[filled : min(length, filled + _STEP)], self._timeout
                )
                if not count:
                    return filled
                filled += count
                advance(count)
        self._complete = True
        if state.our_state is h11.DONE:
            # h11 never saw these bytes: the next exchange starts from a fresh state.
            connection.state = h11.Connection(h11.CLIENT)
            self._fresh = True
        return filled

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        state = connection.state
        if self._complete and self._keep_alive and not self._fresh:
            self._complete = state.our_state is h11.DONE and state.their_state is h11.DONE
            if self._complete:
                state.start_next_cycle()
        if self._complete and self._keep_alive:
            self._transport.release(connection)
        else:
            connection.close()


@contextlib.contextmanager
def _mapped(
    request: httpx.Request,
    failure: type[httpx.TransportError],
    timeout: type[httpx.TimeoutException],
) -> Any:
    """Socket and h11 errors as the httpx exceptions a caller of httpx expects."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout(str(exc) or "timed out", request=request) from exc
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except h11.LocalProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc), request=request) from exc
    except OSError as exc:
        raise failure(str(exc) or type(exc).__name__, request=request) from exc


class AsyncTransport(httpx.AsyncBaseTransport):
    """httpx's async transport for plain HTTP, with pooled keep-alive connections.

    ``fallback`` serves every request this one does not (``https://``).
    """

    def __init__(self, fallback: httpx.AsyncBaseTransport) -> None:
        self._fallback = fallback
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            return await self._fallback.handle_async_request(request)
        timeouts = _timeouts(request)
        origin = (url.host, url.port or 80)
        connection = self._take_idle(origin)
        if connection is None:
            with _mapped(request, httpx.ConnectError, httpx.ConnectTimeout):
                connection = await _Connection.open(origin, timeouts.get("connect"))
        try:
            head = await self._exchange(connection, request, timeouts)
        except BaseException:
            connection.close()
            raise
        keep_alive = (
            head.http_version == b"1.1"
            and _keeps_alive(request.headers.raw)
            and _keeps_alive(head.headers.raw_items())
        )
        body = _ResponseBody(self, connection, request, keep_alive)
        extensions: dict[str, Any] = {
            "http_version": b"HTTP/" + head.http_version,
            "reason_phrase": head.reason,
        }
        if request.method != "HEAD" and _direct_length(head) is not None:
            extensions[_RECEIVER] = body.receive_into
        return httpx.Response(
            head.status_code,
            headers=head.headers.raw_items(),
            stream=body,
            extensions=extensions,
        )

    async def _exchange(
        self, connection: _Connection, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> h11.Response:
        """Send ``request`` and receive the head of its final response."""
        try:
            await self._send_request(connection, request, timeouts.get("write"))
        except httpx.WriteError as failure:
            # A server may answer and close before reading the whole body (a
            # 413 from its Content-Length): that answer is the one to report.
            try:
                return await self._receive_head(connection, request, timeouts.get("read"))
            except httpx.HTTPError:
                raise failure from None
        return await self._receive_head(connection, request, timeouts.get("read"))

    async def _send_request(
        self, connection: _Connection, request: httpx.Request, timeout: float | None
    ) -> None:
        state = connection.state
        with _mapped(request, httpx.WriteError, httpx.WriteTimeout):
            head = state.send(
                h11.Request(
                    method=request.method,
                    target=request.url.raw_path,
                    headers=request.headers.raw,
                )
            )
            stream = request.stream
            buffers = stream.buffers() if isinstance(stream, DirectBody) else None
            if buffers is not None:
                assert isinstance(stream, DirectBody)
                await connection.send(head, timeout, _ignore)
                for buffer in buffers:
                    # h11 counts the body against its Content-Length and hands the view back.
                    data: Any = buffer
                    for piece in state.send_with_data_passthrough(h11.Data(data=data)) or ():
                        await connection.send(piece, timeout, stream.sent)
                await connection.send(state.send(h11.EndOfMessage()) or b"", timeout, _ignore)
                stream.finished()
                return
            assert isinstance(stream, httpx.AsyncByteStream)
            pending = [head]
            size = len(head)
            async for chunk in stream:
                pending.append(state.send(h11.Data(data=chunk)) or b"")
                size += len(chunk)
                if size >= _READ_SIZE:
                    await connection.send(b"".join(pending), timeout, _ignore)
                    pending, size = [], 0
            pending.append(state.send(h11.EndOfMessage()) or b"")
            await connection.send(b"".join(pending), timeout, _ignore)

    async def _receive_head(
        self, connection: _Connection, request: httpx.Request, timeout: float | None
    ) -> h11.Response:
        with _mapped(request, httpx.ReadError, httpx.ReadTimeout):
            while True:
                event = await connection.next_event(timeout)
                if isinstance(event, h11.Response):
                    return event
                if isinstance(event, h11.ConnectionClosed):
                    raise httpx.RemoteProtocolError(
                        "the server closed the connection without sending a response",
                        request=request,
                    )
                if not isinstance(event, h11.InformationalResponse):
                    raise httpx.RemoteProtocolError(
                        f"unexpected {type(event).__name__} before a response",
                        request=request,
                    )

    def _take_idle(self, origin: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.reusable(now):
                return connection
            connection.close()
        return None

    def release(self, connection: _Connection) -> None:
        """Take back a connection whose exchange ended cleanly, for the next call."""
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= MAX_IDLE:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        await self._fallback.aclose()


def _direct_length(head: h11.Response) -> int | None:
    """The body's length when it comes as is, with a Content-Length."""
    if head.status_code in (204, 304):
        return None
    length: int | None = None
    for name, value in head.headers:
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" or (
            name == b"content-encoding" and value.strip().lower() not in (b"", b"identity")
        ):
            return None
    return length
