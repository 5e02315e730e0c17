"""Where an async small call under ASGI loses time against a sync one under WSGI.

``python -m bench.small_calls [--calls N] [--rounds R]``: the bench's servers
(PostgreSQL and Redis when running, as ``make bench``), then R interleaved
rounds of N sequential ``add`` calls (key and audit on) through each of:

- ``Client`` to the sync service under gunicorn (W1's servicewire row),
- ``Client`` to the sync service under uvicorn,
- ``AsyncClient`` to the sync service under uvicorn,
- ``AsyncClient`` to the ``async def`` service under uvicorn (W1's ASGI row).

Interleaving puts each round of every path in the same few seconds of a
noisy machine, so the medians' ratios to the first path tell what changing
the server, the client and the kind of service costs, one at a time. Not
part of ``make bench``: it splits one of its ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from bench.memory import cpu_seconds
from bench.servers import Servers, postgres_available
from servicewire import AsyncClient, Client


def _sync_path(url: str, key: str, name: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    client = Client(url + "/services/", key=key)

    def calls(count: int) -> None:
        for i in range(count):
            assert client.call(name, a=i, b=1) == i + 1

    return calls, client.close


def _async_path(url: str, key: str, name: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    loop = asyncio.new_event_loop()
    client = AsyncClient(url + "/services/", key=key)

    async def run(count: int) -> None:
        for i in range(count):
            assert await client.call(name, a=i, b=1) == i + 1

    def close() -> None:
        loop.run_until_complete(client.close())
        loop.close()

    return lambda count: loop.run_until_complete(run(count)), close


def main() -> None:
    """Print each path's median calls/s, its ratio to the first and the
    CPU per call of the client and of the servers."""
    parser = argparse.ArgumentParser(prog="python -m bench.small_calls")
    parser.add_argument("--calls", type=int, default=1500, help="calls per round and path")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    database = "postgres" if postgres_available() else "sqlite"
    with Servers(database=database) as servers:
        # Every worker of both servers: only the one called works in a round.
        workers = servers.site_workers() + servers.asgi_workers()
        paths = {
            "gunicorn, Client, def add": _sync_path(servers.site_url, servers.key, "add"),
            "uvicorn, Client, def add": _sync_path(servers.asgi_url, servers.key, "add"),
            "uvicorn, AsyncClient, def add": _async_path(servers.asgi_url, servers.key, "add"),
            "uvicorn, AsyncClient, async def add": _async_path(
                servers.asgi_url, servers.key, "async_add"
            ),
        }
        rates: dict[str, list[float]] = {label: [] for label in paths}
        # This process's CPU per call: the client's share of each call.
        cpu: dict[str, list[float]] = {label: [] for label in paths}
        # The servers' CPU per call: what bounds W2 on a machine of few cores.
        served: dict[str, list[float]] = {label: [] for label in paths}
        try:
            for calls, _ in paths.values():
                calls(200)  # connections open, caches warm
            for _ in range(args.rounds):
                for label, (calls, _) in paths.items():
                    start, used = time.perf_counter(), time.process_time()
                    serving = cpu_seconds(workers)
                    calls(args.calls)
                    rates[label].append(args.calls / (time.perf_counter() - start))
                    cpu[label].append((time.process_time() - used) / args.calls * 1e6)
                    served[label].append((cpu_seconds(workers) - serving) / args.calls * 1e6)
        finally:
            for _, close in paths.values():
                close()
    print(f"database: {database}; {args.rounds} rounds of {args.calls} calls per path")
    first = statistics.median(next(iter(rates.values())))
    for label, found in rates.items():
        median = statistics.median(found)
        spread = f"{min(found):,.0f}-{max(found):,.0f}"
        client = statistics.median(cpu[label])
        server = statistics.median(served[label])
        print(
            f"{label:38s} {median:7,.0f} calls/s  ({spread})  {median / first:.2f}x"
            f"  CPU µs/call: client {client:4.0f}, server {server:4.0f}"
        )


if __name__ == "__main__":
    main()
