"""Progress bars for large transfers, on the calling side (tqdm, on stderr).

A :class:`Progress` belongs to a client; each transfer asks it for a meter.
Transfers below the threshold, and clients that did not ask for progress, get
a meter that does nothing, so the per-call path pays one comparison.
"""

from __future__ import annotations

import sys
from typing import Any, Final

#: Transfers smaller than this show no bar: they are over before one draws.
THRESHOLD: Final = 8 * 2**20


class Meter:
    """Counts the bytes of one transfer; this base draws nothing."""

    def update(self, count: int) -> None:
        """Note ``count`` more bytes moved."""

    def close(self) -> None:
        """The transfer is over."""


class _Bar(Meter):
    def __init__(self, what: str, total: int | None) -> None:
        from tqdm import tqdm

        self._bar: Any = tqdm(
            total=total,
            desc=what,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )

    def update(self, count: int) -> None:
        self._bar.update(count)

    def close(self) -> None:
        self._bar.close()


_SILENT: Final = Meter()


class Progress:
    """Hands out meters: bars for large transfers when ``enabled``."""

    def __init__(self, enabled: bool, threshold: int = THRESHOLD) -> None:
        if enabled:
            try:
                import tqdm  # noqa: F401
            except ImportError:
                raise ValueError(
                    "progress bars need tqdm: pip install servicewire[progress]"
                ) from None
        self.enabled = enabled
        self.threshold = threshold

    def meter(self, what: str, total: int | None) -> Meter:
        """A meter for one transfer of ``total`` bytes (None: unknown)."""
        if not self.enabled or total is None or total < self.threshold:
            return _SILENT
        return _Bar(what, total)
