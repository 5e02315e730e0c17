"""The five workloads, run from the parent process against running servers.

Each peer measures in a ``bench.measure`` process of its own (see there);
this module decides what to measure, resets the servers' peak memory before
each measurement, and collects both sides' figures. W1, W2 and the
transfers of the peers that move arrays as buffers keep one client process
per peer and measure them in interleaved rounds; a JSON peer's transfers and
W5 run in one fresh process per measurement.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.measure import percentile
from bench.memory import PeakWatch
from bench.peers import (
    ALL_PEERS,
    HTTP_PEERS,
    Flight,
    Memcpy,
    Peer,
    RawSocket,
    ServicewireAsgi,
    ServicewireBare,
)
from bench.servers import ROOT, Servers, bench_env

MB = 1_000_000
_JSON_CANNOT = (
    "not attempted: 1 GB of float64 is ~2.4 GB of JSON text and 125 million "
    "Python floats (~4 GB) on each side, minutes per call"
)


@dataclass(frozen=True)
class Plan:
    """Sizes and bounds of one run: the full run, or ``--quick``."""

    w1_count: int
    w1_seconds: float
    w2_clients: int
    w2_seconds: float
    sizes: tuple[int, ...]  # W3/W4 payloads, bytes
    reps: int
    rep_budget: float  # stop repeating once a measurement took this long, s
    huge: int  # W5 payload, bytes
    rounds: int  # W1 and W2: interleaved rounds per peer, sharing its seconds
    transfer_rounds: int  # W3 and W4, peers moving buffers: rounds of one transfer


FULL = Plan(5000, 4.0, 16, 5.0, (8 * MB, 80 * MB), 5, 6.0, 1000 * MB, 4, 9)
QUICK = Plan(300, 0.5, 16, 1.0, (1 * MB, 8 * MB), 2, 0.5, 64 * MB, 2, 2)


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no answer from the client within {timeout:.0f} s")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the client exited with {process.wait(10)}")
    return line.strip()


def _server_watches(peer: type[Peer], servers: Servers) -> list[PeakWatch]:
    if peer is Flight:
        return [PeakWatch(servers.flight_pid())]
    if peer is RawSocket:
        return [PeakWatch(servers.socket_pid())]
    if peer is Memcpy:
        return []
    if peer is ServicewireAsgi:
        return [PeakWatch(pid) for pid in servers.asgi_workers()]
    # The request may land on either worker; the one that served it shows the peak.
    return [PeakWatch(pid) for pid in servers.site_workers()]


class _ClientProcess:
    """A ``bench.measure`` process for one peer: started and warm, then
    measuring once per :meth:`measure_once`, on the same connections."""

    def __init__(self, servers: Servers, peer: type[Peer], spec: dict[str, Any]) -> None:
        spec = {
            **spec,
            "peer": peer.name,
            "urls": {
                "site": servers.site_url,
                "asgi": servers.asgi_url,
                "flight": servers.flight_port,
                "socket": servers.socket_port,
            },
        }
        env = bench_env(
            BENCH_SERVICEWIRE_KEY=servers.key,
            BENCH_SIGNING_KEY_ID=servers.signing_key_id,
            BENCH_SIGNING_KEY=servers.signing_key,
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.measure", json.dumps(spec)],
            env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            if _read_line(self.process, 60) != "ready":
                raise RuntimeError("the client did not get ready")
        except BaseException:
            self.close()
            raise

    def measure_once(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        result: dict[str, Any] = json.loads(_read_line(self.process, timeout))
        return result

    def close(self) -> None:
        """End the process: the end of its stdin, else a kill."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _watched(
    client: _ClientProcess, servers: Servers, peer: type[Peer], timeout: float
) -> dict[str, Any]:
    """One measurement by ``client``, with the servers' peak over it as ``server_peak``."""
    watches = _server_watches(peer, servers)
    for watch in watches:
        watch.reset()
    result = client.measure_once(timeout)
    result["server_peak"] = max((w.peak() for w in watches), default=None)
    return result


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def measure(
    servers: Servers, peer: type[Peer], spec: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Run one measurement of ``peer`` in a fresh client process."""
    client = _ClientProcess(servers, peer, spec)
    try:
        return _watched(client, servers, peer, timeout)
    finally:
        client.close()


def _rounds(
    servers: Servers,
    peers: tuple[type[Peer], ...],
    spec: dict[str, Any],
    rounds: int,
    timeout: float,
    *,
    watch_servers: bool = False,
    warm: bool = False,
) -> tuple[dict[type[Peer], list[dict[str, Any]]], dict[type[Peer], str]]:
    """One client process per peer, all started and kept, then ``rounds``
    rounds in which each peer in turn measures once (``spec`` is one round's).

    With ``warm``, a first round is run before them, its results marked
    ``"warm": True`` (not timed figures: a caller keeps only their peaks). With
    ``watch_servers``, the servers' peaks are reset before each peer's turn
    and each result gets its ``server_peak``. Returns each peer's results and
    the peers that failed, with why.
    """
    clients: dict[type[Peer], _ClientProcess] = {}
    done: dict[type[Peer], list[dict[str, Any]]] = {peer: [] for peer in peers}
    failed: dict[type[Peer], str] = {}
    try:
        for peer in peers:
            try:
                clients[peer] = _ClientProcess(servers, peer, spec)
            except Exception as exc:
                failed[peer] = _why(exc)
        for round_ in range(-1 if warm else 0, rounds):
            for peer, client in clients.items():
                if peer in failed:
                    continue
                try:
                    if watch_servers:
                        result = _watched(client, servers, peer, timeout)
                    else:
                        result = client.measure_once(timeout)
                except Exception as exc:
                    failed[peer] = _why(exc)
                    continue
                if round_ < 0:
                    result["warm"] = True
                done[peer].append(result)
    finally:
        for client in clients.values():
            client.close()
    return done, failed


def _interleaved(
    servers: Servers, peers: tuple[type[Peer], ...], spec: dict[str, Any], rounds: int
) -> list[dict[str, Any]]:
    """W1 or W2: one client process per peer, all kept, measured in turn for
    ``rounds`` rounds of ``spec["duration"] / rounds`` seconds each.

    A peer's row: the median of its rounds' calls/s (so a few slow seconds of
    the machine, which fall on one peer's round, move its figure little),
    p50 and p99 of all its calls' latencies, its calls and errors summed.
    """
    each = {**spec, "duration": spec["duration"] / rounds}
    done, failed = _rounds(servers, peers, each, rounds, each["duration"] + 60)
    return [
        _row(spec, peer, {"failed": failed[peer]} if peer in failed else _merged_rounds(done[peer]),
             rounds=rounds)
        for peer in peers
    ]  # fmt: skip


def _row(
    spec: dict[str, Any], peer: type[Peer], result: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """The result row of ``peer`` in the workload of ``spec``, also printed as progress."""
    name = f"{spec['workload']} {peer.name}" + (f" {spec['n'] * 8 // MB} MB" if "n" in spec else "")
    print(f"  {name}: {_summary(result)}", file=sys.stderr, flush=True)
    return {"workload": spec["workload"], "peer": peer.name, "label": peer.label,
            **spec, **extra, **result}  # fmt: skip


def _interleaved_transfers(
    servers: Servers, peers: tuple[type[Peer], ...], spec: dict[str, Any], rounds: int
) -> list[dict[str, Any]]:
    """W3 or W4 for the peers that move arrays as buffers: one client process
    each, a first transfer thrown away, then ``rounds`` rounds of one transfer
    per peer in turn, so that every peer's transfers fall in the same seconds.

    The transfer thrown away is there because these virtual machines back a
    page only when it is first touched: whichever peer went first paid
    0.2-0.3 s more on its first 80 MB transfers (measured: 309, 203, 27, 28,
    43 ms). A row's MB/s is from the median of its transfers; its peaks are
    the highest of all its rounds, the untimed one included (each round
    resets them, on both sides): the loopback socket's two ends make their
    buffer on a connection's first transfer and reuse it after. Every row
    carries the wall time of all the rounds, ``rounds_wall_s``, the same for
    all of them.
    """
    started = time.monotonic()
    done, failed = _rounds(
        servers, peers, {**spec, "reps": 1, "budget": 0.0}, rounds, 600,
        watch_servers=True, warm=True,
    )  # fmt: skip
    wall = round(time.monotonic() - started, 2)
    rows = []
    for peer in peers:
        if peer in failed:
            result: dict[str, Any] = {"failed": failed[peer]}
        else:
            timed = [each for each in done[peer] if not each.get("warm")]
            seconds = [took for each in timed for took in each["seconds"]]
            peaks = [each["server_peak"] for each in done[peer] if each["server_peak"] is not None]
            result = {
                "reps": len(seconds),
                "seconds": seconds,
                "mb_per_s": spec["n"] * 8 / statistics.median(seconds) / 1e6,
                "client_peak": max(each["client_peak"] for each in done[peer]),
                "server_peak": max(peaks) if peaks else None,
            }
        rows.append(_row(spec, peer, result, rounds=rounds, rounds_wall_s=wall))
    return rows


def _merged_rounds(results: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [latency for result in results for latency in result["latencies"]]
    rates = [result["calls_per_s"] for result in results]
    merged: dict[str, Any] = {
        "calls": sum(result["calls"] for result in results),
        "errors": sum(result["errors"] for result in results),
        "calls_per_s": statistics.median(rates),
        "rounds_calls_per_s": [round(rate, 1) for rate in rates],
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }
    if "clients" in results[0]:
        merged["clients"] = results[0]["clients"]
    return merged


def _safely(
    servers: Servers, peer: type[Peer], spec: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """One measurement of ``peer`` in a process of its own, its failure a row too."""
    started = time.monotonic()
    try:
        result = measure(servers, peer, spec, timeout)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        result = {"failed": _why(exc)}
    result["wall_s"] = round(time.monotonic() - started, 2)
    return _row(spec, peer, result)


def _summary(result: dict[str, Any]) -> str:
    if "failed" in result:
        return "FAILED " + result["failed"]
    if "calls_per_s" in result:
        return f"{result['calls_per_s']:.0f} calls/s, {result['errors']} errors"
    return f"{result['mb_per_s']:.0f} MB/s"


def run(servers: Servers, plan: Plan, only: set[str]) -> list[dict[str, Any]]:
    """Run the workloads named in ``only``; one result row per measurement."""
    rows: list[dict[str, Any]] = []
    # W3/W4: the peers that move arrays as buffers take turns, a transfer
    # each per round; the JSON peers, 10-100 times slower, each measure alone
    # (a round with them would last minutes), with no untimed transfer first:
    # the first touch of fresh pages, 0.2-0.3 s (see _interleaved_transfers),
    # is lost in their seconds per call.
    fast = tuple(peer for peer in ALL_PEERS if peer.huge)
    slow = tuple(peer for peer in ALL_PEERS if peer.bulk and not peer.huge)
    if "W1" in only:
        spec = {
            "workload": "W1",
            "kind": "small",
            "count": plan.w1_count,
            "duration": plan.w1_seconds,
        }
        rows += _interleaved(servers, HTTP_PEERS, spec, plan.rounds)
    if "W2" in only:
        spec = {
            "workload": "W2", "kind": "concurrent", "clients": plan.w2_clients,
            "count": 1_000_000, "duration": plan.w2_seconds,
        }  # fmt: skip
        rows += _interleaved(servers, HTTP_PEERS, spec, plan.rounds)
    for workload, kind in (("W3", "download"), ("W4", "upload")):
        if workload not in only:
            continue
        for size in plan.sizes:
            spec = {"workload": workload, "kind": kind, "n": size // 8}
            by_peer = {
                row["peer"]: row
                for row in _interleaved_transfers(servers, fast, spec, plan.transfer_rounds)
            }
            alone = {**spec, "reps": plan.reps, "budget": plan.rep_budget}
            for peer in slow:
                by_peer[peer.name] = _safely(servers, peer, alone, 600)
            rows += [by_peer[peer.name] for peer in ALL_PEERS if peer.name in by_peer]
    if "W5" in only:
        for kind in ("download", "upload"):
            spec = {"workload": "W5", "kind": kind, "n": plan.huge // 8, "reps": 1, "budget": 0.0}
            for peer in ALL_PEERS:
                if peer in (ServicewireBare, ServicewireAsgi) or (peer.small and not peer.bulk):
                    # At 1 GB the per-call cost of auth and audit, of the
                    # kind of credential or of the server's interface, is lost
                    # in the noise: skipped to keep the run under 10 minutes.
                    continue
                if peer.huge:
                    rows.append(_safely(servers, peer, spec, 600))
                else:
                    rows.append({"workload": "W5", "peer": peer.name, "label": peer.label, **spec,
                                 "cannot": _JSON_CANNOT})  # fmt: skip
    return rows


def cpu_model() -> str:
    """The processor's model name, from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare runs."""
    import platform

    import numpy

    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "kernel": platform.release(),
    }
