"""servicewire.threads: the request threads of the ASGI handler, without a server."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async

from servicewire.threads import RequestThread, coroutine_caller

who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def _name() -> str:
    return threading.current_thread().name


def test_a_hop_runs_in_the_thread_with_the_callers_context() -> None:
    async def main() -> tuple[str, str]:
        thread = RequestThread()
        who.set("alice")
        try:
            return await thread.run(lambda: (_name(), who.get()))
        finally:
            thread.shutdown()

    name, seen = asyncio.run(main())
    assert name.startswith("servicewire-asgi_")
    assert seen == "alice"


def test_an_error_in_the_thread_is_raised_to_the_awaiting_task() -> None:
    def fails() -> None:
        raise LookupError("no such row")

    async def main() -> None:
        thread = RequestThread()
        try:
            await thread.run(fails)
        finally:
            thread.shutdown()

    with pytest.raises(LookupError, match="no such row"):
        asyncio.run(main())


def test_a_cancelled_hop_ends_only_when_its_function_has_returned() -> None:
    # A request cancelled (its client gone) does not leave, nor give its
    # thread to the next request, while its code still runs there.
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "done"

    async def main() -> bool:
        thread = RequestThread()
        try:
            task = asyncio.create_task(thread.run(slow))
            assert await asyncio.to_thread(started.wait, 10)
            task.cancel()
            await asyncio.sleep(0.1)
            still_waiting = not task.done()
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            return still_waiting
        finally:
            thread.shutdown()

    assert asyncio.run(main())


def test_a_coroutine_from_the_thread_runs_on_the_loop_and_calls_back_into_it() -> None:
    # The path of an async service: the thread waits for a coroutine on the
    # loop, and that coroutine's thread-sensitive calls come back to the
    # waiting thread (no deadlock, no other thread).
    async def service(n: int) -> tuple[asyncio.AbstractEventLoop, str, int]:
        inner = await sync_to_async(_name)()
        return asyncio.get_running_loop(), inner, n * 2

    async def main() -> tuple[object, str, tuple[asyncio.AbstractEventLoop, str, int]]:
        thread = RequestThread()
        try:
            async with ThreadSensitiveContext(executor=thread):
                result = await thread.run(lambda: (_name(), coroutine_caller(service)(21)))
            return asyncio.get_running_loop(), *result
        finally:
            thread.shutdown()

    loop, outer, (service_loop, inner, doubled) = asyncio.run(main())
    assert service_loop is loop
    assert inner == outer
    assert outer.startswith("servicewire-asgi_")
    assert doubled == 42


def test_async_to_sync_in_the_thread_reaches_the_requests_loop() -> None:
    # Code of the site's own that calls asgiref's async_to_sync in a request
    # thread gets the server's loop, as in asgiref's own threads.
    async def current() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    async def main() -> bool:
        thread = RequestThread()
        try:
            async with ThreadSensitiveContext(executor=thread):
                got = await thread.run(lambda: async_to_sync(current)())
            return got is asyncio.get_running_loop()
        finally:
            thread.shutdown()

    assert asyncio.run(main())


def test_outside_a_request_thread_a_coroutine_gets_a_loop_of_its_own() -> None:
    async def double(n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    assert coroutine_caller(double)(4) == 8


def test_what_the_loop_sets_in_a_local_is_seen_in_the_thread_and_back() -> None:
    # asgiref's Local (Django's caches, the active translation) keeps the
    # data of each thread apart; a hop moves the request's data with it.
    from asgiref.local import Local

    local = Local()

    async def service() -> str:
        return str(local.who)

    def in_thread() -> tuple[str, str]:
        seen = local.who
        local.who = "set in the thread"
        return seen, coroutine_caller(service)()

    async def main() -> tuple[str, str]:
        thread = RequestThread()
        local.who = "set on the loop"
        try:
            async with ThreadSensitiveContext(executor=thread):
                return await thread.run(in_thread)
        finally:
            thread.shutdown()

    assert asyncio.run(main()) == ("set on the loop", "set in the thread")
