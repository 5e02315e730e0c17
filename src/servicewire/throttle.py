"""Rate limits on the Django cache: calls per client, failed logins per address.

Counting uses fixed windows: the clock is cut into windows of the rate's
period (a minute for ``600/m``), aligned on the Unix epoch, and each window has
its own counter in the cache. A counter is created with a timeout a little
past its window's end and advanced atomically
(:func:`servicewire.sharedcache.count`: one script on Redis, ``cache.add``
and ``cache.incr`` elsewhere), so every worker sharing the cache counts into
the same number. Fixed windows are simple and cheap (one counter per client);
their price is that a client may spend its allowance at the end of one window
and again at the start of the next, so up to twice the rate can pass in a
short span straddling a boundary. ``Retry-After`` says when the window ends.

With the local-memory cache (the single-process default) counts are per
process; a site with several workers needs a shared cache.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from servicewire import sharedcache
from servicewire.conf import get_settings
from servicewire.errors import RateLimited

if TYPE_CHECKING:
    from servicewire.auth import Caller

_RATE_RE = re.compile(r"\s*(\d{1,9})\s*/\s*([smhd])\s*")
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PERIOD_WORDS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
# A counter outlives its window by this much, so that a worker whose clock is a
# little behind never finds it gone; later windows use other keys anyway.
_EXPIRY_MARGIN = 5


@dataclass(frozen=True)
class Rate:
    """``count`` calls per ``period`` seconds, read from text like ``600/m``."""

    count: int
    period: int

    @property
    def unit(self) -> str:
        """The period in words: ``second``, ``minute``, ``hour`` or ``day``."""
        return _PERIOD_WORDS[self.period]


@lru_cache(maxsize=256)
def parse_rate(text: str) -> Rate:
    """Read ``600/m``, ``10/s``, ``5000/h`` or ``100000/d`` as a :class:`Rate`.

    Raises ValueError with a message fit for a user on anything else,
    including a count of 0 (to stop a client, disable it instead).

    Example::

        parse_rate("600/m")   # Rate(count=600, period=60)
    """
    match = _RATE_RE.fullmatch(text or "")
    if match is None:
        raise ValueError(
            f"not a rate: {text[:40]!r} (use calls per second, minute, hour or day, "
            "e.g. 10/s, 600/m, 5000/h or 100000/d)"
        )
    count = int(match[1])
    if count < 1:
        raise ValueError(
            f"not a rate: {text[:40]!r} (the count must be at least 1; "
            "to stop a client, disable it)"
        )
    return Rate(count, _PERIODS[match[2]])


def _configured(text: str, name: str) -> Rate | None:
    """The rate a setting or a client's field names; None when empty (no limit)."""
    if not text.strip():
        return None
    try:
        return parse_rate(text)
    except ValueError as exc:
        # Fail closed: a limit the operator meant to set must not vanish
        # silently. The system check reports a bad setting at start-up.
        raise ImproperlyConfigured(f"{name}: {exc}") from None


def _window(rate: Rate, now: float) -> tuple[int, float]:
    """The current window's number and the seconds left until it ends."""
    number = int(now // rate.period)
    return number, (number + 1) * rate.period - now


def _counter(name: str, rate: Rate, now: float) -> tuple[str, float]:
    """The cache key of ``name``'s counter in the current window, and the
    seconds left in the window."""
    number, left = _window(rate, now)
    return f"servicewire:rate:{name}:{rate.period}:{number}", left


def _count_one(name: str, rate: Rate, now: float) -> tuple[int, float]:
    """Add one to ``name``'s counter in the current window; the new count and
    the seconds left in the window."""
    key, left = _counter(name, rate, now)
    return sharedcache.count(key, int(left) + 1 + _EXPIRY_MARGIN), left


def _address_name(remote_addr: str) -> str:
    # Cache keys must be short and plain (Memcached): hash what came off the wire.
    return "addr:" + hashlib.blake2b(remote_addr.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class AddressLimit:
    """The failed-login limit of one address in the current window.

    :attr:`names` are the cache entries :meth:`check` reads, so that a caller
    who reads the cache anyway (the key look-up) can fetch them in the same
    round trip and hand them over.
    """

    rate: Rate | None
    counter: str = ""
    left: float = 0.0

    @property
    def names(self) -> tuple[str, ...]:
        """The cache entries the check reads."""
        return (self.counter,) if self.rate is not None else ()

    def check(self, found: Mapping[str, Any] | None = None) -> None:
        """Refuse (RateLimited) when the address has too many recent failures.

        ``found`` holds :attr:`names` as just read from the cache (an absent
        name: no failures); without it the cache is asked here.
        """
        rate = self.rate
        if rate is None:
            return
        failures = found.get(self.counter) if found is not None else cache.get(self.counter)
        if isinstance(failures, int) and failures >= rate.count:
            raise RateLimited(
                f"too many failed authentications from this address (at most "
                f"{rate.count} per {rate.unit}); retry in {max(1, round(self.left))} s",
                retry_after=self.left,
            )


def address_limit(remote_addr: str) -> AddressLimit:
    """The failed-login limit that applies to ``remote_addr`` now."""
    rate = _configured(get_settings().AUTH_FAILURE_RATE, "SERVICEWIRE['AUTH_FAILURE_RATE']")
    if rate is None:
        return AddressLimit(None)
    counter, left = _counter(_address_name(remote_addr), rate, time.time())
    return AddressLimit(rate, counter, left)


def check_address(remote_addr: str) -> None:
    """Refuse (RateLimited) an address with too many recent failed logins.

    Called before any credential is checked, so that a key cannot be guessed
    faster than ``AUTH_FAILURE_RATE`` allows, and a right key from an address
    over the limit is refused too until its window ends.
    """
    address_limit(remote_addr).check()


def note_failure(remote_addr: str) -> None:
    """Count one failed authentication from ``remote_addr``."""
    rate = _configured(get_settings().AUTH_FAILURE_RATE, "SERVICEWIRE['AUTH_FAILURE_RATE']")
    if rate is not None:
        _count_one(_address_name(remote_addr), rate, time.time())


def client_rate(caller: Caller) -> Rate | None:
    """The rate that applies to ``caller``: its client's own, else the site's."""
    own = caller.client.rate or ""
    if own.strip():
        return _configured(own, f"the rate of client {caller.client.name!r}")
    return _configured(get_settings().RATE, "SERVICEWIRE['RATE']")


def check_client(caller: Caller) -> None:
    """Count one call of ``caller``'s client; RateLimited when over its rate.

    Every credential of a client (keys, tokens, signatures, its user's
    session) spends the same allowance.
    """
    rate = client_rate(caller)
    if rate is None:
        return
    count, left = _count_one(f"client:{caller.client.pk}", rate, time.time())
    if count > rate.count:
        raise RateLimited(
            f"this client may make at most {rate.count} calls per {rate.unit}; "
            f"retry in {max(1, round(left))} s",
            details={"limit": rate.count, "period": rate.period},
            retry_after=left,
        )
