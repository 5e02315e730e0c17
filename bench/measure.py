"""One measurement in a fresh client process: ``python -m bench.measure '<spec>'``.

A fresh process per measurement keeps each peak-memory figure clean. The
process connects and warms up, prints ``ready``, waits for a line on stdin
(the parent uses that pause to reset the servers' peaks), resets its own
peak, measures, and prints one line of JSON. Every loop is bounded in count
and in time.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from typing import Any

import numpy as np

from bench.memory import PeakWatch
from bench.peers import BY_NAME, Memcpy, Peer


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def small_calls(peer: Peer, count: int, duration: float) -> dict[str, Any]:
    """W1: sequential ``add`` calls on one kept-alive connection."""
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + duration
    for i in range(count):
        before = time.perf_counter()
        if before > deadline:
            break
        try:
            if peer.add(i, 1) != i + 1:
                errors += 1
        except Exception:
            errors += 1
        latencies.append(time.perf_counter() - before)
    elapsed = time.perf_counter() - started
    return {
        "calls": len(latencies),
        "errors": errors,
        "calls_per_s": (len(latencies) - errors) / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
    }


def concurrent_calls(peers: list[Peer], count: int, duration: float) -> dict[str, Any]:
    """W2: one thread per peer instance (each its own connection), for ``duration``."""
    done = [0] * len(peers)
    failed = [0] * len(peers)
    latencies: list[list[float]] = [[] for _ in peers]
    start = threading.Barrier(len(peers) + 1)
    deadline = [0.0]

    def run(index: int, peer: Peer) -> None:
        start.wait()
        for i in range(count):
            before = time.perf_counter()
            if before > deadline[0]:
                break
            try:
                if peer.add(i, index) == i + index:
                    done[index] += 1
                else:
                    failed[index] += 1
            except Exception:
                failed[index] += 1
            latencies[index].append(time.perf_counter() - before)

    threads = [threading.Thread(target=run, args=(i, p), daemon=True) for i, p in enumerate(peers)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    deadline[0] = started + duration
    start.wait()
    for thread in threads:
        thread.join(duration + 60)
    elapsed = time.perf_counter() - started
    merged = [latency for each in latencies for latency in each]
    return {
        "clients": len(peers),
        "calls": sum(done),
        "errors": sum(failed),
        "calls_per_s": sum(done) / elapsed,
        "p50_ms": _percentile(merged, 0.50) * 1e3,
        "p99_ms": _percentile(merged, 0.99) * 1e3,
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
    sys.stdin.readline()
    watch = PeakWatch("self")
    watch.reset()
    if kind == "small":
        result = small_calls(peers[0], spec["count"], spec["duration"])
    elif kind == "concurrent":
        result = concurrent_calls(peers, spec["count"], spec["duration"])
    else:
        result = transfer(peers[0], kind, spec["n"], spec["reps"], spec["budget"])
    result["client_peak"] = watch.peak()
    for peer in peers:
        peer.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
