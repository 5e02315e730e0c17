"""Peak memory of a process, from Linux's ``/proc``.

The kernel keeps each process's peak resident set size (``VmHWM``) and lets
its owner reset it to the current size by writing ``5`` to
``/proc/<pid>/clear_refs`` (Linux 4.0 and later). So a measurement resets the
peak, notes the resident size, runs, and reports the peak minus that size:
the memory the operation itself needed at its worst, in bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _status_kib(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(f"{field} not in /proc/{pid}/status")


@dataclass
class PeakWatch:
    """The peak above the resident size at :meth:`reset`, for one process."""

    pid: int | str
    baseline: int = 0

    def reset(self) -> None:
        """Start a new peak at the current resident size."""
        with open(f"/proc/{self.pid}/clear_refs", "w") as clear:
            clear.write("5")
        self.baseline = _status_kib(self.pid, "VmRSS") * 1024

    def peak(self) -> int:
        """Bytes by which the peak since :meth:`reset` exceeded the baseline."""
        return max(0, _status_kib(self.pid, "VmHWM") * 1024 - self.baseline)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (gunicorn's workers of its master)."""
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def cpu_seconds(pids: list[int]) -> float:
    """The CPU time (user and system) the processes ``pids`` have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            # Fields after the command name (which may hold spaces), from 3 on.
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick
