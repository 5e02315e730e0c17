"""Authenticated key look-ups, cached in the Django cache and forgotten on change.

Every call needs its key and client. Reading them from the database costs
about a third of a small call, so their state is kept in the site's cache for
``KEY_CACHE_SECONDS``, and forgotten whenever a key or client changes: a save,
a delete, or a queryset ``update()``/``delete()`` (the models' querysets call
:func:`forget_keys`).

Forgetting is done with generations, not only deletes: each key has a
generation token in the cache, an entry is valid only under the token that
was current *before* its row was read, and a change replaces the token (at
once, and again when its transaction commits). So a request that read the
old row just before a revocation committed cannot put it back: its entry
carries a generation that no longer exists.

Only a cache shared by every worker may hold them (Redis, Memcached, the
database or file cache): with a process-local cache one worker could go on
serving a key that another worker revoked, so such caches are never used.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache, caches
from django.db import transaction

from servicewire import sharedcache
from servicewire.conf import get_settings

_ENTRY = "servicewire:key:"
_GENERATION = "servicewire:keygen:"
_USED = "servicewire:keyused:"
# Backends whose entries live in one process (or nowhere): never trusted with
# a key's state, since revocation must reach every worker on the next call.
_LOCAL_BACKENDS = frozenset({"LocMemCache", "DummyCache"})

_KEY_FIELDS = ("pk", "key_id", "secret_hash", "public_key", "expires", "revoked", "last_used")
_CLIENT_FIELDS = ("pk", "name", "is_active", "scopes", "allow_pickle", "rate", "user_id")


def enabled() -> bool:
    """Whether key state may be cached: a shared cache and a positive lifetime."""
    if get_settings().KEY_CACHE_SECONDS <= 0:
        return False
    return type(caches["default"]).__name__ not in _LOCAL_BACKENDS


@dataclass(frozen=True)
class Lookup:
    """What the cache knows of a key: its state (None: read the database), the
    generation to store a fresh read under, and whether its use was noted
    recently (then ``last_used`` needs no write). ``also`` holds the other
    entries asked for in the same round trip (None when the cache was not
    asked at all)."""

    state: dict[str, Any] | None = None
    generation: str | None = None
    used_recently: bool = False
    also: Mapping[str, Any] | None = field(default=None, repr=False)


def load(key_id: str, also: tuple[str, ...] = ()) -> Lookup:
    """Everything the cache knows of a key, with the entries named in
    ``also`` (a rate counter, say), in one round trip."""
    if not enabled():
        return Lookup()
    names = [_ENTRY + key_id, _GENERATION + key_id, _USED + key_id, *also]
    found = sharedcache.get_many(names)
    state, generation = found.get(names[0]), found.get(names[1])
    if state is None or generation is None or state["generation"] != generation:
        state = None
    return Lookup(state, generation, names[2] in found, found)


def current_generation(key_id: str, seen: str | None) -> str | None:
    """The generation to store a freshly read row under: call before reading it."""
    if seen is not None or not enabled():
        return seen
    token = uuid.uuid4().hex
    if cache.add(_GENERATION + key_id, token, timeout=_generation_timeout()):
        return token
    found: str | None = cache.get(_GENERATION + key_id)
    return found


def store(key: Any, generation: str | None) -> None:
    """Cache the state of ``key`` (an ApiKey with its client) under ``generation``."""
    if generation is None or not enabled():
        return
    state = {
        "generation": generation,
        "key": {name: getattr(key, name) for name in _KEY_FIELDS},
        "client": {name: getattr(key.client, name) for name in _CLIENT_FIELDS},
    }
    cache.set(_ENTRY + key.key_id, state, timeout=get_settings().KEY_CACHE_SECONDS)


def forget_keys(key_ids: Iterable[str]) -> None:
    """Invalidate cached keys now and again when the current transaction commits."""
    ids = list(key_ids)
    if not ids or not enabled():
        return

    def renew() -> None:
        timeout = _generation_timeout()
        cache.set_many({_GENERATION + i: uuid.uuid4().hex for i in ids}, timeout=timeout)
        cache.delete_many([_ENTRY + i for i in ids])

    renew()
    transaction.on_commit(renew)


def first_use_in(key_id: str, seconds: int) -> bool:
    """True for the first use of a key in ``seconds``, across every worker."""
    return bool(cache.add(_USED + key_id, 1, timeout=max(1, seconds)))


def _generation_timeout() -> int:
    # Longer than any entry it validates, so an entry never outlives its token.
    return 2 * get_settings().KEY_CACHE_SECONDS + 60
