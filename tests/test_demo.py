"""``servicewire demo``, run as a real command, and the site process it starts.

Each test starts real processes; every wait is bounded so that a hang fails
the test instead of the run.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

DEMO_TIMEOUT = 300  # seconds for a whole demo run
WAIT = 60.0  # seconds for any one thing to happen

FULL_KEY = re.compile(r"sw_[A-Za-z0-9]{12}_[A-Za-z0-9]{43}")
SERVER_LINE = re.compile(r"^\s+server\s+(http://127\.0\.0\.1:(\d+)/services/) \(pid (\d+)\)$")
FOLDER_LINE = re.compile(r"^\s+folder\s+(\S+)$")

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@dataclass(frozen=True)
class SiteSeen:
    """What a demo run printed about its site."""

    url: str
    port: int
    pid: int
    folder: Path


def seen_in(output: str) -> SiteSeen:
    server = folder = None
    for line in output.splitlines():
        server = server or SERVER_LINE.match(line)
        folder = folder or FOLDER_LINE.match(line)
    assert server and folder, output
    return SiteSeen(server[1], int(server[2]), int(server[3]), Path(folder[1]))


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0):
            return True
    except OSError:
        return False


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process reusing the number
        return True
    return True


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not is_running(pid):
            return True
        time.sleep(0.1)
    return False


def assert_nothing_left(site: SiteSeen) -> None:
    assert not site.folder.exists(), f"{site.folder} was left behind"
    assert not accepts_connections(site.port), f"something still listens on {site.port}"
    assert not is_running(site.pid), f"the site process {site.pid} still runs"


def reset_sigint() -> None:
    # A shell's background job may start with SIGINT ignored, and Python keeps
    # an ignored SIGINT ignored; the demo under test must see it as Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Lines:
    """Reads a process's stdout on a thread, so waits for a line are bounded."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern[str], seconds: float = WAIT) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern.pattern} within {seconds} s")
            if line is None:
                pytest.fail(f"output ended before {pattern.pattern}:\n{''.join(self.seen)}")
            self.seen.append(line)
            if pattern.match(line.rstrip("\n")):
                return

    def rest(self, seconds: float = WAIT) -> str:
        deadline = time.monotonic() + seconds
        while (line := self._queue.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
            self.seen.append(line)
        return "".join(self.seen)


@pytest.fixture
def demo() -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    """A running ``servicewire demo``, killed at the end if a test left it running."""
    process, lines = start_demo()
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(WAIT)


def test_demo_runs_every_step_and_leaves_nothing_running() -> None:
    # -X importtime lists every module the demo process imports, on stderr;
    # the site's own process is started without the flag and logs to a file.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "servicewire", "demo"],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]

    assert re.search(r"^\s+add\s+add\(a=1, b=2\) -> 3\s", out, re.M)
    for kind in ("datetime", "date", "timedelta", "Decimal", "UUID", "set", "tuple", "complex"):
        assert re.search(rf"\s{kind}\s+server saw {kind}$", out, re.M), kind
    for step in ("array up", "array down", "array round trip"):
        assert re.search(rf"^\s+{step}\s.*values verified|^\s+{step}\s.*100 MB", out, re.M), step
        assert re.search(rf"^\s+{step}\s.* ms\s+[\d,]+ MB/s", out, re.M), step
    assert re.search(r"^\s+typed error\s+caught Overdrawn \(409\): bob cannot withdraw", out, re.M)
    assert "'missing': Decimal('4.50')" in out
    assert re.search(r"^\s+json codec\s", out, re.M)
    assert "all 10 steps passed" in out
    assert "FAILED" not in out

    assert not FULL_KEY.search(out + done.stderr), "the full key was printed"
    assert re.search(r"^\s+key\s+sw_[A-Za-z0-9]{12}_…", out, re.M)
    assert not re.search(r"\|\s+django\b", done.stderr), "the client side imported Django"
    assert_nothing_left(seen_in(out))


def start_demo() -> tuple[subprocess.Popen[str], Lines]:
    process = subprocess.Popen(
        [sys.executable, "-m", "servicewire", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=reset_sigint if sys.platform != "win32" else None,
    )
    assert process.stdout is not None
    return process, Lines(process.stdout)


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_demo_stops_its_site_and_removes_its_folder(signum: int) -> None:
    # The signal is sent as soon as the site is up; on a starved machine the
    # demo may finish its few seconds of calls before the signal lands, and
    # then it proves nothing: try again, a bounded number of times.
    for _ in range(3):
        process, lines = start_demo()
        try:
            lines.wait_for(SERVER_LINE)
            process.send_signal(signum)
            status = process.wait(WAIT)
            output = lines.rest()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(WAIT)
        if not (status == 0 and "steps passed" in output):
            break
    assert status == 130, output
    assert "interrupted" in output
    assert "site stopped, folder removed" in output
    assert_nothing_left(seen_in(output))


@posix_only
def test_site_stops_when_the_demo_is_killed(demo: tuple[subprocess.Popen[str], Lines]) -> None:
    process, lines = demo
    lines.wait_for(SERVER_LINE)
    site = seen_in("".join(lines.seen))
    process.kill()  # no cleanup can run: the site must notice on its own
    process.wait(WAIT)
    try:
        assert gone_within(site.pid, WAIT), "the site outlived the killed demo"
        assert not accepts_connections(site.port)
    finally:
        shutil.rmtree(site.folder, ignore_errors=True)


def test_site_process_hands_over_url_and_key_and_stops_at_end_of_stdin(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "servicewire.demo.settings",
        "SERVICEWIRE_DEMO_DIR": str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "servicewire.demo.serve", "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=environment,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        lines = Lines(process.stdout)
        lines.wait_for(re.compile(r"^\{.*\}$"))
        handshake = json.loads(lines.seen[-1])
        assert set(handshake) == {"url", "key", "pid"}
        assert FULL_KEY.fullmatch(handshake["key"])
        assert handshake["url"].startswith("http://127.0.0.1:")
        port = int(handshake["url"].rsplit(":", 1)[1].split("/")[0])
        assert accepts_connections(port)
        process.stdin.close()
        assert process.wait(WAIT) == 0
        assert not accepts_connections(port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)


def test_demo_reports_a_site_that_cannot_start(tmp_path: Path) -> None:
    # A django package that fails on import breaks only the site's process:
    # the demo's own process never imports Django.
    (tmp_path / "django").mkdir()
    (tmp_path / "django" / "__init__.py").write_text('raise ImportError("broken on purpose")\n')
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-m", "servicewire", "demo"],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        env=environment,
    )
    assert done.returncode == 1
    assert re.search(r"^\s+start\s+FAILED: the site stopped", done.stdout, re.M)
    assert "broken on purpose" in done.stdout  # the tail of the site's log
    assert "1 step(s) failed: start" in done.stdout
    folder = next(FOLDER_LINE.match(line) for line in done.stdout.splitlines() if "folder" in line)
    assert folder is not None and not Path(folder[1]).exists()
