"""``servicewire demo``: a Django site in a subprocess, called through :class:`Client`.

This process plays the desktop program: it never imports Django. It makes a
temporary folder, starts the bundled site (:mod:`servicewire.demo.serve`) in a
subprocess on 127.0.0.1, calls it with the real :class:`servicewire.Client`
(plain values, rich values, a 100 MB numpy array each way, a typed error, the
JSON codec), prints each step with its timing as it finishes, and then stops
the server and removes the folder, also on Ctrl-C, SIGTERM or an exception.

Exit status: 0 when every step passed, 1 when one failed or the site could
not start, 130 when interrupted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO

from servicewire.demo.steps import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    Report,
    Site,
    StartFailed,
    call_site,
    describe_error,
    format_figure,
    timed,
)

__all__ = ["main"]


# -- the site's process ----------------------------------------------------


def _start_site(folder: Path) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "servicewire.demo.settings",
        "SERVICEWIRE_DEMO_DIR": str(folder),
    }
    # The server's log (one line per request) goes to a file in the folder, so
    # it neither mixes with the report nor fills a pipe nobody reads.
    with open(folder / "server.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "servicewire.demo.serve", "--port", "0"],
            stdin=subprocess.PIPE,  # the site stops when this pipe closes
            stdout=subprocess.PIPE,
            stderr=log,
            env=environment,
        )


def _drain(stream: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
    # The first line is the handshake; anything later is read and dropped so
    # that the site can never block on a full pipe.
    lines.put(stream.readline() or None)
    for _ in stream:
        pass


def _wait_for_site(process: subprocess.Popen[bytes], folder: Path) -> Site:
    assert process.stdout is not None  # Popen(stdout=PIPE) sets it
    lines: queue.Queue[bytes | None] = queue.Queue()
    threading.Thread(target=_drain, args=(process.stdout, lines), daemon=True).start()
    try:
        line = lines.get(timeout=START_TIMEOUT)
    except queue.Empty:
        raise StartFailed(f"the site did not start within {START_TIMEOUT:.0f} s") from None
    if line is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT)
        raise StartFailed(
            f"the site stopped (status {process.returncode}) before it was ready:\n"
            + _log_tail(folder)
        )
    try:
        handshake = json.loads(line)
        return Site(process, str(handshake["url"]), str(handshake["key"]), int(handshake["pid"]))
    except (ValueError, KeyError, TypeError):
        # Never print the line itself: it would hold the key.
        raise StartFailed("the site's first line was not the expected handshake") from None


def _log_tail(folder: Path, lines: int = 20) -> str:
    try:
        text = (folder / "server.log").read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _stop_site(process: subprocess.Popen[bytes]) -> bool:
    """Stop the site: close its stdin, then terminate, then kill; True once it is gone."""
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    for escalate in (None, process.terminate, process.kill):
        if escalate is not None:
            with contextlib.suppress(OSError):
                escalate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            continue
        break
    if process.stdout is not None:
        with contextlib.suppress(OSError):
            process.stdout.close()
    return process.poll() is not None


@contextlib.contextmanager
def _sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while the demo runs, so cleanup runs for both."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can be set only from the main thread
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while cleaning up: a second one must not leave
    the server running or the folder behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# -- the demo --------------------------------------------------------------


def main() -> int:
    """Run the demo; return the exit status (0 passed, 1 failed, 130 interrupted)."""
    if importlib.util.find_spec("django") is None:
        print(
            "servicewire demo: the demo site needs Django: pip install 'servicewire[django]'",
            file=sys.stderr,
        )
        return 1
    report = Report()
    folder = Path(tempfile.mkdtemp(prefix="servicewire-demo-"))
    process: subprocess.Popen[bytes] | None = None
    interrupted = False
    print("servicewire demo: a Django site in a subprocess, called through servicewire.Client")
    print(flush=True)
    with _sigterm_as_keyboard_interrupt():
        try:
            report.line("folder", str(folder))
            process = _start_site(folder)
            site, seconds = timed(lambda: _wait_for_site(process, folder))
            report.line("start", "migrated, issued a key, listening", format_figure(seconds))
            call_site(site, report)
        except StartFailed as exc:
            report.failed.append("start")
            report.line("start", f"FAILED: {exc}")
        except Exception as exc:  # reported as a failure; cleanup runs below
            report.failed.append("demo")
            report.line("demo", f"FAILED: {describe_error(exc)}")
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: stopping the site", flush=True)
        finally:
            # Cleanup must finish even if Ctrl-C is pressed again meanwhile.
            with _uninterruptible():
                cleaned = _clean_up(process, folder, report)
    if interrupted:
        print(f"\ninterrupted after {report.passed} passed step(s)", flush=True)
        return 130
    if report.failed:
        print(f"\n{len(report.failed)} step(s) failed: {', '.join(report.failed)}", flush=True)
        return 1
    if not cleaned:
        return 1
    print(f"\nall {report.passed} steps passed", flush=True)
    return 0


def _clean_up(process: subprocess.Popen[bytes] | None, folder: Path, report: Report) -> bool:
    """Stop the site and remove the folder; True when both are done."""
    print(flush=True)
    stopped = process is None or _stop_site(process)
    shutil.rmtree(folder, ignore_errors=True)
    removed = not folder.exists()
    site = "site stopped" if stopped else f"COULD NOT STOP the site (pid {_pid(process)})"
    files = "folder removed" if removed else f"COULD NOT REMOVE {folder}"
    report.line("stop", f"{site}, {files}")
    return stopped and removed


def _pid(process: subprocess.Popen[bytes] | None) -> int | None:
    return process.pid if process is not None else None
