"""The audit trail: one entry per request to the mount, allowed or refused."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from servicewire.auth import Caller


@dataclass
class AuditRecord:
    """What the view learns about a request as it goes; written once at the end."""

    request_id: str
    remote_addr: str
    user_agent: str
    service: str = ""
    caller: Caller | None = None
    bytes_in: int = 0
    error_type: str = ""
    started: float = field(default_factory=time.perf_counter)


def write(record: AuditRecord, status: int, bytes_out: int) -> None:
    """Store one entry for the request; never raises into the response."""
