"""One measurement in a fresh client process: ``python -m bench.measure '<spec>'``.

A fresh process per measurement keeps each peak-memory figure clean. The
process connects and warms up, prints ``ready``, waits for a line on stdin
(the parent uses that pause to reset the servers' peaks), resets its own
peak, measures, and prints one line of JSON. Every loop is bounded in count
and in time.

Each further ``go`` line measures again, on the same connections, until
stdin ends: so the parent can keep one process per peer and interleave
their rounds (W1 and W2), putting every peer in the same seconds of a noisy
machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import threading
import time
from typing import Any, cast

import numpy as np

from bench.memory import PeakWatch
from bench.peers import BY_NAME, AsyncPeer, Memcpy, Peer

#: Untimed calls before each round of W1 (a fifth of them per client in W2).
WAKE_CALLS = 20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def small_calls(peer: Peer, count: int, duration: float) -> dict[str, Any]:
    """W1: sequential ``add`` calls on one kept-alive connection; for an async
    client, awaited one after the other in one coroutine, as an asyncio program
    makes them."""
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + duration

    def judge(i: int, answer: int, before: float) -> None:
        nonlocal errors
        if answer != i + 1:
            errors += 1
        latencies.append(time.perf_counter() - before)

    async def calls_awaited(peer: AsyncPeer) -> None:
        for i in range(count):
            before = time.perf_counter()
            if before > deadline:
                break
            try:
                answer = await peer.add_async(i, 1)
            except Exception:
                answer = -1
            judge(i, answer, before)

    if isinstance(peer, AsyncPeer):
        peer.loop.run_until_complete(calls_awaited(peer))
    else:
        for i in range(count):
            before = time.perf_counter()
            if before > deadline:
                break
            try:
                answer = peer.add(i, 1)
            except Exception:
                answer = -1
            judge(i, answer, before)
    elapsed = time.perf_counter() - started
    return {
        "calls": len(latencies),
        "errors": errors,
        "calls_per_s": (len(latencies) - errors) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "latencies": latencies,
    }


def concurrent_calls(peers: list[Peer], count: int, duration: float) -> dict[str, Any]:
    """W2: one thread per peer instance (each its own connection), for ``duration``;
    for an async client, one task per instance on the one event loop."""
    if all(isinstance(peer, AsyncPeer) for peer in peers):
        return _concurrent_tasks(cast(list[AsyncPeer], peers), count, duration)
    tally = _Tally(len(peers))
    start = threading.Barrier(len(peers) + 1)
    deadline = [0.0]

    def run(index: int, peer: Peer) -> None:
        start.wait()
        for i in range(count):
            before = time.perf_counter()
            if before > deadline[0]:
                break
            try:
                right = peer.add(i, index) == i + index
            except Exception:
                right = False
            tally.count(index, right, before)

    threads = [threading.Thread(target=run, args=(i, p), daemon=True) for i, p in enumerate(peers)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    deadline[0] = started + duration
    start.wait()
    for thread in threads:
        thread.join(duration + 60)
    return tally.result(time.perf_counter() - started)


def _concurrent_tasks(peers: list[AsyncPeer], count: int, duration: float) -> dict[str, Any]:
    """W2 as an asyncio program makes concurrent calls: a task per client."""
    tally = _Tally(len(peers))

    async def run(index: int, peer: AsyncPeer, deadline: float) -> None:
        for i in range(count):
            before = time.perf_counter()
            if before > deadline:
                break
            try:
                right = await peer.add_async(i, index) == i + index
            except Exception:
                right = False
            tally.count(index, right, before)

    async def all_clients(deadline: float) -> None:
        await asyncio.gather(*(run(index, peer, deadline) for index, peer in enumerate(peers)))

    started = time.perf_counter()
    peers[0].loop.run_until_complete(all_clients(started + duration))
    return tally.result(time.perf_counter() - started)


class _Tally:
    """W2's counts, one slot per client, so that no two clients write one slot."""

    def __init__(self, clients: int) -> None:
        self.done = [0] * clients
        self.failed = [0] * clients
        self.latencies: list[list[float]] = [[] for _ in range(clients)]

    def count(self, index: int, right: bool, before: float) -> None:
        """Count client ``index``'s call, started at ``before``, as done or failed."""
        if right:
            self.done[index] += 1
        else:
            self.failed[index] += 1
        self.latencies[index].append(time.perf_counter() - before)

    def result(self, elapsed: float) -> dict[str, Any]:
        merged = [latency for each in self.latencies for latency in each]
        return {
            "clients": len(self.done),
            "calls": sum(self.done),
            "errors": sum(self.failed),
            "calls_per_s": sum(self.done) / elapsed,
            "p50_ms": percentile(merged, 0.50) * 1e3,
            "p99_ms": percentile(merged, 0.99) * 1e3,
            "latencies": merged,
        }


def transfer(peer: Peer, direction: str, n: int, reps: int, budget: float) -> dict[str, Any]:
    """W3/W4/W5: move ``n`` float64 values, ``reps`` times at most, within ``budget`` s.

    The upload's source array is made after the peak was reset, so on both
    sides and in both directions one copy of the payload is the floor: the
    peak-to-payload ratio of a perfect transfer is 1.0.
    """
    nbytes = n * 8
    times: list[float] = []
    started = time.perf_counter()
    source = np.arange(n, dtype=np.float64) if direction == "upload" else None
    for _ in range(reps):
        before = time.perf_counter()
        if direction == "download":
            result = peer.download(n)
            took = time.perf_counter() - before
            if not (isinstance(result, np.ndarray) and result.size == n and result[-1] == n - 1):
                raise AssertionError(f"{peer.name} downloaded a wrong array")
            del result
        else:
            assert source is not None
            received = peer.upload(source)
            took = time.perf_counter() - before
            if received != nbytes:
                raise AssertionError(f"{peer.name} reports {received} bytes, not {nbytes}")
        times.append(took)
        if time.perf_counter() - started > budget:
            break
    median = statistics.median(times)
    return {"reps": len(times), "seconds": times, "mb_per_s": nbytes / median / 1e6}


def _wake(peers: list[Peer], kind: str) -> None:
    """A few untimed calls just before a round of W1 or W2.

    On these virtual machines a server or client left idle for some seconds
    now and then takes 0.4-0.7 s over its next call (seen after 6-15 s idle,
    on gunicorn and uvicorn alike, with the original pattern as with
    servicewire; bench/README). Between interleaved rounds every peer waits
    while the others run, the ASGI server longest: without these calls the
    pause would fall on whichever round follows it, a fifth of a 1 s round.
    """
    if kind == "small":
        for i in range(WAKE_CALLS):
            peers[0].add(i, 1)
    else:
        concurrent_calls(peers, WAKE_CALLS // 5, 5.0)


def main() -> None:
    """Run the measurement described by the JSON in ``argv[1]``; print its result."""
    spec = json.loads(sys.argv[1])
    urls = {
        **spec["urls"],
        "key": os.environ.get("BENCH_SERVICEWIRE_KEY", ""),
        "key_id": os.environ.get("BENCH_SIGNING_KEY_ID", ""),
        "signing_key": os.environ.get("BENCH_SIGNING_KEY", ""),
    }
    peer_class = BY_NAME[spec["peer"]]
    kind = spec["kind"]
    peers = [peer_class(urls) for _ in range(spec.get("clients", 1))]
    for peer in peers:
        if kind in ("small", "concurrent"):
            peer.add(1, 1)
        elif isinstance(peer, Memcpy):
            peer.prepare(spec["n"])
        elif kind == "download":
            peer.download(1)
        else:
            peer.upload(np.arange(1, dtype=np.float64))
    print("ready", flush=True)
    watch = PeakWatch("self")
    while sys.stdin.readline().strip() == "go":
        if kind in ("small", "concurrent"):
            _wake(peers, kind)
        watch.reset()
        if kind == "small":
            result = small_calls(peers[0], spec["count"], spec["duration"])
        elif kind == "concurrent":
            result = concurrent_calls(peers, spec["count"], spec["duration"])
        else:
            result = transfer(peers[0], kind, spec["n"], spec["reps"], spec["budget"])
        result["client_peak"] = watch.peak()
        print(json.dumps(result), flush=True)
    for peer in peers:
        peer.close()


if __name__ == "__main__":
    main()
