"""The request threads of :mod:`servicewire.asgi`, with hops cheaper than asgiref's.

Under ASGI each request's synchronous code runs on one thread of its own.
asgiref's ``sync_to_async`` gets there through ``loop.run_in_executor``, a
``ThreadPoolExecutor``, a shield future and two context copies (about 100 µs
of CPU per hop measured here), and an async service called back from that
thread through ``async_to_sync`` costs as much again. A :class:`RequestThread`
is one thread with one queue:

- :meth:`RequestThread.run` (on the event loop) hands it a function and
  awaits its result: one queue put, one ``call_soon_threadsafe`` back.
- :meth:`RequestThread.submit` is the ``Executor`` interface, so that
  ``ThreadSensitiveContext(executor=...)`` sends asgiref's thread-sensitive
  calls of the same request (Django's async ORM, ``sync_to_async``) to the
  same thread, in order.
- :func:`coroutine_caller` runs a coroutine on the request's event loop from
  that thread and waits for it, serving the thread's queue meanwhile: a
  thread-sensitive call made by the coroutine runs on the waiting thread, as
  asgiref's ``CurrentThreadExecutor`` does it, instead of deadlocking.

Code in the thread that calls asgiref's ``async_to_sync`` itself still
reaches the request's loop: the thread carries it as asgiref's own
``sync_to_async`` threads do.

Each hop carries a copy of the sender's context, as asgiref's do. asgiref
3.13 and later tag the data of a ``Local`` (Django's caches, the active
translation and time zone) with the thread that set it and hide it from any
other thread unless moved on purpose; a hop moves it on purpose, as asgiref's
own do, so that what the event loop set is seen in the request's thread and
what that thread set is seen by a coroutine it runs. Unlike asgiref, changes
to context variables made at the far end of a hop are not copied back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import itertools
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync, async_to_sync

# asgiref 3.13+ tags a Local's data with the thread it belongs to (private
# API, looked up so that an asgiref without it is served as well); in older
# versions a Local's data is visible in every thread and needs no moving.
_LocalData: Any = getattr(importlib.import_module("asgiref.local"), "_Storage", None)

__all__ = ["RequestThread", "coroutine_caller"]

T = TypeVar("T")

_numbers = itertools.count()
# The RequestThread of this thread, and the loop of the hop it runs now.
_local = threading.local()


class _Hop:
    """A function handed over from the loop, and the future it settles there."""

    __slots__ = ("context", "ended", "fn", "future", "loop", "waiter")

    def __init__(self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.loop = loop
        self.context = contextvars.copy_context()
        self.future: asyncio.Future[Any] = loop.create_future()
        self.ended = False
        self.waiter: asyncio.Future[None] | None = None

    def settle(self, result: Any, error: BaseException | None) -> None:
        """On the loop: the function returned or raised in its thread."""
        self.ended = True
        if not self.future.done():
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait_for_end(self) -> None:
        """Wait until the function has returned in its thread, cancelled or not."""
        while not self.ended:
            self.waiter = self.loop.create_future()
            with contextlib.suppress(asyncio.CancelledError):
                await self.waiter


class _Submitted:
    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.future: Future[Any] = Future()


class _Arrival:
    """Put on the queue when a coroutine the thread waits for has ended."""

    __slots__ = ("arrived",)

    def __init__(self) -> None:
        self.arrived = False


_Item = _Hop | _Submitted | _Arrival | None


def _moved_here(fn: Callable[[], T]) -> T:
    """``fn()``, with the data of asgiref ``Local`` objects in the current
    context handed to this thread first (run inside the context)."""
    if _LocalData is not None:
        here = threading.get_ident()
        for var, value in contextvars.copy_context().items():
            if type(value) is _LocalData and value.thread_id != here:
                var.set(_LocalData(here, value.data))
    return fn()


class RequestThread(Executor):
    """One thread running the synchronous code of one request at a time."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, name=f"servicewire-asgi_{next(_numbers)}", daemon=True
        )
        self._thread.start()

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in this thread, in a copy of the caller's context."""
        hop = _Hop(fn, asyncio.get_running_loop())
        self._queue.put(hop)
        try:
            result: T = await hop.future
        except asyncio.CancelledError:
            # The function goes on in its thread: the request is not left
            # (nor its thread reused) before it has returned.
            await hop.wait_for_end()
            raise
        return result

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        item = _Submitted(fn, args, kwargs)
        self._queue.put(item)
        return item.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._queue.put(None)
        if wait:
            self._thread.join()

    def _serve(self) -> None:
        _local.thread = self
        _local.loop = None
        while (item := self._queue.get()) is not None:
            self._do(item)

    def _do(self, item: _Item) -> None:
        if isinstance(item, _Arrival):
            item.arrived = True
        elif isinstance(item, _Submitted):
            if item.future.set_running_or_notify_cancel():
                try:
                    item.future.set_result(item.fn(*item.args, **item.kwargs))
                except BaseException as exc:
                    item.future.set_exception(exc)
        elif isinstance(item, _Hop):
            self._hop(item)

    def _hop(self, hop: _Hop) -> None:
        outer = _local.loop
        _local.loop = hop.loop
        # What asgiref's own threads carry, for async_to_sync called in this one.
        SyncToAsync.threadlocal.main_event_loop = hop.loop
        SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()
        try:
            result, error = hop.context.run(_moved_here, hop.fn), None
        except BaseException as exc:
            result, error = None, exc
        finally:
            _local.loop = outer
        hop.loop.call_soon_threadsafe(hop.settle, result, error)

    def wait_for(self, coroutine: Awaitable[T]) -> T:
        """Run ``coroutine`` on the loop of the current hop and wait for it here,
        running what it sends to this thread meanwhile."""
        loop: asyncio.AbstractEventLoop = _local.loop
        arrival = _Arrival()
        context = contextvars.copy_context()
        started: list[asyncio.Future[T]] = []

        def start() -> None:
            task = asyncio.ensure_future(coroutine, loop=loop)
            task.add_done_callback(lambda _: self._queue.put(arrival))
            started.append(task)

        loop.call_soon_threadsafe(_moved_here, start, context=context)
        stopping = False
        while not arrival.arrived:
            item = self._queue.get()
            if item is None:  # shut down meanwhile: stop once the wait is over
                stopping = True
            else:
                self._do(item)
        if stopping:
            self._queue.put(None)
        return started[0].result()


def coroutine_caller(func: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """``func`` as a plain function for synchronous code: through the current
    :class:`RequestThread` when there is one, else asgiref's ``async_to_sync``."""
    thread: RequestThread | None = getattr(_local, "thread", None)
    if thread is None or getattr(_local, "loop", None) is None:
        return async_to_sync(func)

    def call(*args: Any, **kwargs: Any) -> T:
        return thread.wait_for(func(*args, **kwargs))

    return call
