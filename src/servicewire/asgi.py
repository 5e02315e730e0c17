"""Serve a site under ASGI (uvicorn, daphne, hypercorn) with servicewire at full speed.

:func:`get_asgi_application` is a drop-in for Django's own::

    # mysite/asgi.py
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

    from servicewire.asgi import get_asgi_application

    application = get_asgi_application()

Every request is served exactly as Django's ``ASGIHandler`` serves it, with
four differences, each for what Django's handler makes slow:

- **Large call bodies go straight into the buffer they are decoded from.**
  Django's handler writes every request body into a ``SpooledTemporaryFile``
  (on disk above ``FILE_UPLOAD_MAX_MEMORY_SIZE``) before the view starts, and
  the view then reads it back: a disk round trip and two more copies of an
  array. Here a call of a servicewire service with a ``Content-Length`` of
  :data:`DIRECT_BODY_MIN` bytes or more is received into one
  :func:`~servicewire.segments.receive_buffer` and left on the request as
  ``request.servicewire_body``: read from the socket straight into it where
  the server offers the ``servicewire.receive_into`` extension
  (:mod:`servicewire.uvicorn`), else copied into it from the ASGI messages
  (one copy). :mod:`servicewire.receiving` takes it there. A body above the site's
  ``MAX_BODY_BYTES`` is not buffered at all: the view refuses it with 413
  from its ``Content-Length`` and what arrives is discarded as it comes.
  Requests to every other view are spooled exactly as by Django. The
  buffer is dropped when Django closes the body file after the response,
  and nothing of the request is left in a reference cycle by the handler, so
  that the body does not wait for the garbage collector (see
  :meth:`ASGIHandler.listen_for_disconnect`).
- **Large responses stream from the encoded segments**: servicewire's views
  answer with an asynchronous iterator (no ``sync_to_async(list)`` of the
  whole body, no warning), and response messages are up to
  :attr:`ASGIHandler.chunk_size` bytes, so a 512 KiB piece is not sliced
  (and copied) again.
- **Threads are reused.** Django runs each request's synchronous code (sync
  views and middleware, database access) on a thread of its own, made for
  that request and dropped after it; with ``CONN_MAX_AGE`` every request then
  also opens a new database connection, and since cache objects are kept per
  context, a Redis cache opens a new connection per request too. Here each
  request still has a thread to itself for its whole duration, taken from a
  pool of idle ones, with that thread's database and cache connections, as
  a threaded WSGI server does. A hop to that thread and back is one queue
  put and one ``call_soon_threadsafe`` (:class:`~servicewire.threads.RequestThread`),
  about half the CPU of asgiref's ``sync_to_async``; an async service is
  awaited on the server's loop from there and its thread-sensitive calls
  (Django's async ORM) come back to the same thread. (Needs asgiref 3.13 or
  later; older versions get Django's behaviour.)
- **servicewire's own views run in one hop.** They are synchronous:
  ``request_started``, their middleware chain and the view run in one call
  to the request's thread, as under WSGI, instead of one hop there and back
  for the signal and one per middleware method.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import io
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, Any, Final, TypeVar, cast

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.cache import BaseCache, caches
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.core.handlers.asgi import ASGIRequest, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import FileResponse, HttpRequest, HttpResponseBase
from django.urls import Resolver404, get_resolver, set_script_prefix

from servicewire import sending
from servicewire.conf import get_settings
from servicewire.segments import receive_buffer
from servicewire.threads import RequestThread

__all__ = ["DIRECT_BODY_MIN", "ASGIHandler", "get_asgi_application"]

_T = TypeVar("_T")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ReceiveInto = Callable[[Any], Awaitable[int]]

#: The ASGI extension of a server that reads a body into the application's
#: buffer; named as :mod:`servicewire.uvicorn` names it, which needs uvicorn.
RECEIVE_INTO: Final = "servicewire.receive_into"
#: The ASGI extension of a server that sends any buffer as a response body.
SEND_BUFFERS: Final = "servicewire.send_buffers"

#: Call bodies of at least this many bytes are received straight into their buffer.
DIRECT_BODY_MIN: Final = 64 * 1024

#: Idle request threads kept for the next requests; more are made when needed.
IDLE_THREADS: Final = 32


_OWN_EXECUTOR = "executor" in inspect.signature(ThreadSensitiveContext).parameters
# The thread of the request being served (servicewire's own views only use it).
_thread: contextvars.ContextVar[RequestThread] = contextvars.ContextVar("servicewire_thread")
# Whether the server serving the request sends any buffer as a response body.
_sends_buffers: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "servicewire_sends_buffers", default=False
)


def get_asgi_application() -> ASGIHandler:
    """Set up Django and return the handler: the twin of
    :func:`django.core.asgi.get_asgi_application`."""
    import django

    django.setup(set_prefix=False)
    return ASGIHandler()


class ASGIHandler(DjangoASGIHandler):
    """Django's ASGI handler, with servicewire's large bodies and pooled threads."""

    # One message per piece of servicewire's streamed bodies (512 KiB), so
    # Django does not slice each into copies; also FileResponse's block size.
    chunk_size = 512 * 1024

    def __init__(self) -> None:
        super().__init__()
        self._idle: list[RequestThread] = []
        # Each request thread's own cache objects (and so their connections).
        self._caches: dict[RequestThread, dict[str, BaseCache]] = {}
        # The same middleware as a synchronous chain, as a WSGI handler has it.
        self._sync = BaseHandler()
        self._sync.load_middleware(is_async=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _OWN_EXECUTOR:
            await super().__call__(scope, receive, send)
            return
        # Only the event loop's thread touches the pool: no lock needed.
        executor = self._idle.pop() if self._idle else RequestThread()
        token = _thread.set(executor)
        try:
            self._use_thread_caches(executor)
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            _thread.reset(token)
            if len(self._idle) < IDLE_THREADS:
                self._idle.append(executor)
            else:
                executor.shutdown(wait=False)
                self._caches.pop(executor, None)

    def _use_thread_caches(self, executor: RequestThread) -> None:
        # Django keeps cache objects per context under ASGI, so each request
        # would make its own, and a Redis cache a new connection per request.
        # Here they belong to the request's thread, as under a threaded WSGI
        # server: reused by the requests that thread serves, one at a time.
        own = self._caches.setdefault(executor, {})
        for alias in caches:
            if alias not in own:
                own[alias] = caches.create_connection(alias)
            caches[alias] = own[alias]

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = sending.under_asgi.set(True)
        buffers = _sends_buffers.set(SEND_BUFFERS in (scope.get("extensions") or {}))
        try:
            kind = _view_kind(_urlconf(), _path_info(scope))
            planned = _planned_receive(scope, receive) if kind == "call" else None
            if planned is not None:
                receive = planned
            if kind is None:
                await super().handle(scope, receive, send)
            else:
                await self._handle_own(scope, receive, send)
        finally:
            _sends_buffers.reset(buffers)
            sending.under_asgi.reset(token)

    async def _handle_own(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one of servicewire's views: Django's ``handle``, in fewer thread hops.

        Django's handler goes to the request's thread to send
        ``request_started``, again for the middleware chain and the view (once
        per middleware method, in fact), and again to close the response.
        servicewire's views are synchronous, so the signal, the middleware
        and the view run in one hop, as under WSGI; an answer held whole in
        memory (every small call's) is also closed in that hop
        (``request_finished``), just before its bytes go out, rather than in
        a hop of its own after. Each hop saved is a wake-up of the thread and
        one of the event loop: some tens of microseconds of a small call.

        A streamed answer is sent as by Django: racing the client's
        disconnect, so that a large answer stops being encoded when its
        client has left, and closed in the request's thread once sent.
        """
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            request, refusal = self.create_request(scope, body_file)
            if request is None:
                assert refusal is not None
                await signals.request_started.asend(sender=self.__class__, scope=scope)
                await self.send_response(refusal, send)
                await _in_request_thread(refusal.close)
                return
            if isinstance(receive, _PlannedReceive) and receive.refuse:
                # The body was left unread for a 413: take what still
                # arrives while the view answers, so that the client
                # can finish sending and read it.
                draining = asyncio.create_task(self._discard_body(receive))
                try:
                    await self._answer(scope, request, receive, send)
                finally:
                    await _cancelled(draining)
            else:
                await self._answer(scope, request, receive, send)
        finally:
            body_file.close()

    async def _answer(
        self, scope: Scope, request: HttpRequest, receive: Receive, send: Send
    ) -> None:
        response = await _in_request_thread(functools.partial(self._response, scope, request))
        if not response.streaming:
            # Already closed in the request's thread.
            await self.send_response(response, send)
            return
        streaming = asyncio.create_task(self._send_streamed(response, send))
        listening = asyncio.create_task(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait((streaming, listening), return_when=asyncio.FIRST_COMPLETED)
        finally:
            try:
                # The client left first (or the answer is sent): stop the other side.
                await _cancelled(streaming)
                await _cancelled(listening)
            finally:
                await _in_request_thread(response.close)

    async def _send_streamed(self, response: HttpResponseBase, send: Send) -> None:
        # A client gone while the answer is sent is no error of the view's.
        with contextlib.suppress(asyncio.CancelledError):
            await self.send_response(response, send)

    def _response(self, scope: Scope, request: HttpRequest) -> HttpResponseBase:
        # In the request's thread, as a WSGI handler does it.
        signals.request_started.send(sender=self.__class__, scope=scope)
        response = self._sync.get_response(request)
        response._handler_class = self.__class__  # type: ignore[attr-defined]
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        if not response.streaming:
            # Its bytes are all in memory: closing it leaves them to send.
            response.close()
        return response

    async def send_response(self, response: HttpResponseBase, send: Send) -> None:
        if _sends_buffers.get() and _streams_own_pieces(response):
            # Django's response makes bytes of every piece it streams; a
            # server that sends views as they are gets the views.
            response.make_bytes = _as_is  # type: ignore[method-assign, assignment]
        await super().send_response(response, send)

    async def read_body(self, receive: Receive) -> IO[bytes]:
        if not isinstance(receive, _PlannedReceive):
            return await super().read_body(receive)
        if receive.refuse:
            # Refused by the view from its Content-Length; nothing is buffered.
            return io.BytesIO()
        if receive.into is not None:
            body = await _read_body_directly(receive.into, receive.length)
        else:
            body = await _receive_into_buffer(receive, receive.length)
        # A raw binary file: typeshed's IO[bytes] names more than Django uses.
        return cast(IO[bytes], body)

    def create_request(
        self, scope: Mapping[str, Any], body_file: IO[bytes]
    ) -> tuple[ASGIRequest, None] | tuple[None, HttpResponseBase]:
        created = super().create_request(scope, body_file)
        request = created[0]
        if request is not None and isinstance(body_file, _BufferFile) and body_file.complete:
            request.servicewire_body = body_file.buffer  # type: ignore[attr-defined]
            body_file.request = weakref.ref(request)
        return created

    async def listen_for_disconnect(self, receive: Receive) -> None:
        # Django's own raises RequestAborted at the disconnect, which every
        # ASGI server reports once the response is sent, so after every
        # request. Django's handle() ignores it as it ignores a return, but
        # re-raised there its traceback holds handle()'s frame, whose locals
        # hold the task, the exception, the request and its body: a reference
        # cycle, so each request's body stayed in memory until the garbage
        # collector's next run (several 80 MB uploads at once, measured).
        # Returning ends this task just the same without the cycle.
        message = await receive()
        if message["type"] != "http.disconnect":
            raise AssertionError(f"Invalid ASGI message after request body: {message['type']}")

    @staticmethod
    async def _discard_body(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


async def _in_request_thread(fn: Callable[[], _T]) -> _T:
    """``fn()`` in the request's thread: one hop there and back."""
    thread = _thread.get(None)
    if thread is None:  # an older asgiref: Django's own threads
        return await sync_to_async(fn)()
    return await thread.run(fn)


def _streams_own_pieces(response: HttpResponseBase) -> bool:
    """Whether ``response`` streams servicewire's pieces as they came from its view
    (no middleware has wrapped them since)."""
    pieces = getattr(response, "_iterator", None)  # Django's, where it keeps the stream
    return getattr(pieces, "ag_code", None) is sending.async_pieces.__code__


def _as_is(piece: Any) -> Any:
    return piece


async def _cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` if it still runs, and wait for it to end."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, RequestAborted):
        await task


class _PlannedReceive:
    """The server's ``receive``, carrying how a large call body is taken (into
    its buffer, by the server itself where it can, or refused unread) to the
    handler's hooks."""

    __slots__ = ("_receive", "into", "length", "refuse")

    def __init__(
        self, receive: Receive, length: int, refuse: bool, into: ReceiveInto | None
    ) -> None:
        self._receive = receive
        self.length = length
        self.refuse = refuse
        self.into = into

    def __call__(self) -> Awaitable[Mapping[str, Any]]:
        return self._receive()


def _direct_receiver(scope: Mapping[str, Any]) -> ReceiveInto | None:
    """The server's way to read the body straight into a buffer, if it has one
    (:mod:`servicewire.uvicorn`)."""
    extension = (scope.get("extensions") or {}).get(RECEIVE_INTO)
    return extension.get("receive_into") if isinstance(extension, dict) else None


def _content_length(scope: Mapping[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _planned_receive(scope: Mapping[str, Any], receive: Receive) -> _PlannedReceive | None:
    """``receive`` with a plan for a large body sent to a servicewire call,
    else None (Django's way)."""
    length = _content_length(scope)
    if length is None or length < DIRECT_BODY_MIN or scope.get("method") != "POST":
        return None
    refuse = length > get_settings().MAX_BODY_BYTES
    return _PlannedReceive(receive, length, refuse, _direct_receiver(scope))


def _path_info(scope: Mapping[str, Any]) -> str:
    script_name = get_script_prefix(scope)
    path = str(scope["path"])
    return path.removeprefix(script_name) if script_name else path


def _urlconf() -> str | None:
    return getattr(settings, "ROOT_URLCONF", None)


@functools.lru_cache(maxsize=1024)
def _view_kind(urlconf: str | None, path_info: str) -> str | None:
    """``"call"`` for a servicewire call, ``"other"`` for servicewire's other
    views, None for every other view of the site."""
    from servicewire import views
    from servicewire.registry import Service

    try:
        func = get_resolver(urlconf).resolve(path_info).func
    except Resolver404:
        return None
    if func is views.call or isinstance(func, Service):
        return "call"
    if func in (views.discovery, views.openapi, views.token):
        return "other"
    return None


class _BufferFile(io.RawIOBase):
    """A read-only file over the received body, for code that reads the stream."""

    def __init__(self, buffer: bytearray | memoryview, filled: int, complete: bool) -> None:
        super().__init__()
        self.buffer = buffer
        self.complete = complete
        self.request: weakref.ref[HttpRequest] | None = None
        self._view = memoryview(buffer).cast("B")[:filled]
        self._position = 0

    def close(self) -> None:
        # Django's handler closes the body file once the response is sent.
        # The body goes then, with the request's reference to it, even if the
        # request itself lives on in a reference cycle until the garbage
        # collector's next run (contrib.messages' middleware makes one, and
        # Django's handler another): else each such request would keep its
        # whole body, several large uploads at once.
        request = self.request() if self.request is not None else None
        if request is not None:
            request.__dict__.pop("servicewire_body", None)
        self.buffer = self._view = memoryview(b"")
        super().close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        chunk = self._view[self._position : self._position + len(memoryview(target).cast("B"))]
        memoryview(target).cast("B")[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def tell(self) -> int:
        return self._position


async def _receive_into_buffer(receive: Receive, length: int) -> _BufferFile:
    """The body's bytes, copied once out of the ASGI messages into one buffer."""
    buffer = receive_buffer(length)
    view = memoryview(buffer).cast("B")
    filled = 0
    overflow = False
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted
        chunk = message.get("body", b"")
        if chunk:
            end = filled + len(chunk)
            if end > length:
                # More than the Content-Length announced (an ASGI server frames
                # bodies by it, so never in practice): the view gets what fits
                # and no ready body, and so reads and judges the stream itself.
                overflow = True
                end = length
            view[filled:end] = chunk[: end - filled]
            filled = end
        if not message.get("more_body", False):
            break
    return _BufferFile(buffer, filled, complete=filled == length and not overflow)


async def _read_body_directly(receive_into: ReceiveInto, length: int) -> _BufferFile:
    """The body read by the server straight into one buffer: no copy of ours."""
    buffer = receive_buffer(length)
    filled = await receive_into(memoryview(buffer).cast("B")[:length])
    if filled < length:
        raise RequestAborted  # the client left before the end of its body
    return _BufferFile(buffer, filled, complete=True)
