"""Start and stop every server of the bench, all bound to 127.0.0.1.

:class:`Servers` is a context manager: leaving it, normally, on an error or on
Ctrl-C, terminates each server it started (then kills what does not stop) and
drops the PostgreSQL database it made.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from bench.memory import children

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
THREADS = 4


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of every bench process, servers and clients alike.

    OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are set on some machines to work
    around old OpenBLAS builds; they slow a current numpy, so the bench's own
    processes run without them (and only those).

    Peak memory is measured as growth above the resident size (bench.memory),
    which only sees memory that the allocator takes from the system. glibc's
    dynamic mmap threshold would keep a freed 8 MB buffer in the heap and
    reuse it unseen, and Arrow's own pools would too; a fixed threshold and
    Arrow's system pool make every large buffer come from, and go back to,
    the system, so each measurement sees its own.
    """
    dropped = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    # Fixing the mmap threshold also pins glibc's trim threshold at 128 KiB:
    # every freed 256 KiB read buffer of an ASGI server would go back to the
    # system and be faulted in again (30,000 page faults per 80 MB upload under
    # uvicorn). 4 MiB keeps those buffers; it stays small because free memory
    # kept at the top of the heap (left by the JSON peers' millions of floats,
    # in the same workers) would be reused unseen by the next measurement: at
    # 128 MiB an 8 MB upload showed a server peak of 0 MB.
    env["MALLOC_TRIM_THRESHOLD_"] = str(4 << 20)
    env["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"no server listened on port {port} within {timeout} s")


def redis_available() -> bool:
    """Whether Redis answers on 127.0.0.1:6379 (then the site's cache is Redis)."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2):
            return True
    except OSError:
        return False


def postgres_available() -> bool:
    """Whether PostgreSQL answers on 127.0.0.1:5432 as user ``postgres``."""
    try:
        import psycopg

        psycopg.connect(
            host="127.0.0.1", user="postgres", dbname="postgres", connect_timeout=2
        ).close()
    except Exception:
        return False
    return True


def _postgres_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@dataclass
class Servers:
    """The Django site under gunicorn and under uvicorn, the Flight server and
    the socket server."""

    database: str = "sqlite"
    site_url: str = ""
    asgi_url: str = ""
    flight_port: int = 0
    socket_port: int = 0
    key: str = ""
    signing_key_id: str = ""
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _site: subprocess.Popen[bytes] | None = None
    _asgi: subprocess.Popen[bytes] | None = None
    _flight: subprocess.Popen[bytes] | None = None
    _socket: subprocess.Popen[bytes] | None = None
    _tmp: str = ""
    _pg_name: str = ""

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def site_workers(self) -> list[int]:
        """The pids of the gunicorn workers serving the site now."""
        assert self._site is not None
        return children(self._site.pid)

    def asgi_workers(self) -> list[int]:
        """The pids of the uvicorn workers serving the site now."""
        assert self._asgi is not None
        return children(self._asgi.pid)

    def flight_pid(self) -> int:
        assert self._flight is not None
        return self._flight.pid

    def socket_pid(self) -> int:
        assert self._socket is not None
        return self._socket.pid

    def _site_env(self) -> dict[str, str]:
        if self.database == "postgres":
            redis = {"BENCH_REDIS": "1"} if redis_available() else {}
            return bench_env(BENCH_DB="postgres", BENCH_PG_NAME=self._pg_name, **redis)
        return bench_env(BENCH_DB="sqlite", BENCH_SQLITE=str(Path(self._tmp) / "bench.sqlite3"))

    def _start(self) -> None:
        self._tmp = tempfile.mkdtemp(prefix="servicewire-bench-")
        if self.database == "postgres":
            self._pg_name = f"servicewire_bench_{uuid.uuid4().hex[:12]}"
            _postgres_admin(f'CREATE DATABASE "{self._pg_name}"')
        env = self._site_env()
        self.signing_key = str(Path(self._tmp) / "signing-key.pem")
        done = subprocess.run(
            [sys.executable, "-m", "bench.site.setup"],
            env={**env, "BENCH_SIGNING_KEY": self.signing_key},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"preparing the bench database failed:\n{done.stderr}")
        *_, self.signing_key_id, self.key = done.stdout.strip().splitlines()
        self._start_site(env)
        self._start_asgi(env)
        self._flight = self._start_printing_port("bench.flight_server")
        self._socket = self._start_printing_port("bench.socket_server")

    def _start_site(self, env: dict[str, str]) -> None:
        port = _free_port()
        command = [
            sys.executable, "-m", "gunicorn", "bench.site.wsgi:application",
            "--bind", f"127.0.0.1:{port}",
            "--workers", str(WORKERS),
            "--worker-class", "gthread",
            "--threads", str(THREADS),
            # Long keep-alive: each client keeps its one connection for a whole
            # workload, idle while the other peers take their rounds.
            "--keep-alive", "300",
            "--timeout", "300",
            "--graceful-timeout", "5",
            "--log-level", "warning",
        ]  # fmt: skip
        self._site = subprocess.Popen(command, env=env, cwd=ROOT)
        self._processes.append(self._site)
        _wait_for_port(port, self._site, timeout=60)
        deadline = time.monotonic() + 30
        while len(self.site_workers()) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.1)
        self.site_url = f"http://127.0.0.1:{port}"

    def _start_asgi(self, env: dict[str, str]) -> None:
        """The same site under uvicorn, as many workers as gunicorn has."""
        port = _free_port()
        # uvicorn's own supervisor, with TCP_NODELAY restored (see bench.asgi_server).
        command = [
            sys.executable, "-m", "bench.asgi_server", "bench.site.asgi:application",
            "--port", str(port),
            "--workers", str(WORKERS),
        ]  # fmt: skip
        if "BENCH_ASGI_HTTP" in os.environ:  # else bench.asgi_server's: servicewire's
            command += ["--http", os.environ["BENCH_ASGI_HTTP"]]
        self._asgi = subprocess.Popen(command, env=env, cwd=ROOT)
        self._processes.append(self._asgi)
        _wait_for_port(port, self._asgi, timeout=60)
        deadline = time.monotonic() + 30
        while len(self.asgi_workers()) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.1)
        self.asgi_url = f"http://127.0.0.1:{port}"

    def _start_printing_port(self, module: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", module], env=bench_env(), cwd=ROOT, stdout=subprocess.PIPE
        )
        self._processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"{module} exited with {process.wait(10)} before listening")
        port = int(line)
        _wait_for_port(port, process, timeout=30)
        if module == "bench.flight_server":
            self.flight_port = port
        else:
            self.socket_port = port
        return process

    def stop(self) -> None:
        """Stop every server started, then remove the database; safe to repeat."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._processes.clear()
        if self._pg_name:
            try:
                _postgres_admin(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)')
            finally:
                self._pg_name = ""
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = ""
