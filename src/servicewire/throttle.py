"""Rate limits on the Django cache: per client, and failed logins per address."""

from __future__ import annotations

from servicewire.auth import Caller


def check_address(remote_addr: str) -> None:
    """Refuse (RateLimited) an address with too many recent failed logins."""


def note_failure(remote_addr: str) -> None:
    """Count one failed authentication from ``remote_addr``."""


def check_client(caller: Caller) -> None:
    """Count one call of ``caller``'s client; RateLimited when over its rate."""
