"""What a hop between the event loop and a request's thread costs.

``python -m bench.hops``: wall time and CPU per hop (this process, both
threads) of asgiref's ``sync_to_async`` and of servicewire's
:class:`~servicewire.threads.RequestThread`, for a plain function (a sync
service's view) and for a function that runs a coroutine on the loop (an
async service's), on uvloop when it is installed. Not part of ``make bench``:
it measures servicewire against asgiref, not against the peers.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async

from servicewire.threads import RequestThread, coroutine_caller

HOPS = 5000


def _plain() -> int:
    return 1


async def _coroutine() -> int:
    return 1


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(label: str, hop: Callable[[], Awaitable[object]]) -> None:
    for _ in range(200):
        await hop()
    cpu, start = _cpu(), time.perf_counter()
    for _ in range(HOPS):
        await hop()
    wall = (time.perf_counter() - start) / HOPS * 1e6
    print(f"{label:48s} {wall:6.1f} µs wall {(_cpu() - cpu) / HOPS * 1e6:6.1f} µs CPU")


async def _all() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    async with ThreadSensitiveContext(executor=pool):
        await _measure("asgiref sync_to_async(f)", sync_to_async(_plain))
        await _measure(
            "asgiref sync_to_async(async_to_sync(coroutine))",
            sync_to_async(async_to_sync(_coroutine)),
        )
    pool.shutdown()
    thread = RequestThread()
    async with ThreadSensitiveContext(executor=thread):
        await _measure("RequestThread.run(f)", lambda: thread.run(_plain))
        await _measure(
            "RequestThread.run(coroutine_caller(coroutine))",
            lambda: thread.run(lambda: coroutine_caller(_coroutine)()),
        )
    thread.shutdown()


def main() -> None:
    """Two rounds of every kind of hop, printed."""
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    try:
        import uvloop
    except ImportError:
        pass
    else:
        run = uvloop.run
    for _ in range(2):
        run(_all())


if __name__ == "__main__":
    main()
