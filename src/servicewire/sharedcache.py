"""The few cache operations of a call, at one round trip each.

A small call asks the site's cache for its key's state and its address's
failed logins (one ``get_many``), and, where a rate applies, counts itself
(one atomic increment). Through Django's cache API these cost more than they
should with Django's own ``RedisCache``: every operation builds a new
``redis.Redis`` client (about 0.2 ms with redis-py 8, longer than the round
trip itself), and ``incr`` is two round trips (``EXISTS``, then ``INCR``).

So when the default cache is exactly Django's ``RedisCache`` with its own
client and serializer, these functions talk to Redis through one client kept
per cache connection, in the format that backend reads and writes (same key
function, plain integers for counters, pickle for the rest): the cache API
and this module see the same entries. They use the first (primary) server,
where every write goes, so a revocation or a count is seen by the next call
on any worker even when the cache has read replicas. Any other cache
(django-redis keeps its clients already, Memcached, the database, local
memory) goes through the plain cache API.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache, RedisCacheClient, RedisSerializer

# Adds one to a counter, creating it with its expiry (ARGV[1] seconds) when
# absent. A script runs alone on the server, so the two steps are atomic: a
# counter never lives on without its expiry, and no two calls see the same
# count. One command costs half the CPU of redis-py's MULTI/EXEC pipeline.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


@dataclass(frozen=True)
class _Redis:
    """The kept client of one cache connection and what goes with it."""

    client: Any
    serializer: RedisSerializer
    count: Any  # _COUNT registered with the client (EVALSHA; loaded when missing)


# One client per cache connection (Django's caches are per thread); it goes
# away with the backend instance it was made for.
_clients: weakref.WeakKeyDictionary[RedisCacheClient, _Redis] = weakref.WeakKeyDictionary()


def _redis(backend: Any) -> _Redis | None:
    """What is kept for a stock ``RedisCache``'s connection, else None."""
    if type(backend) is not RedisCache:
        return None
    # Private parts of Django's backend (stable since Django 4.0); anything
    # unexpected takes the plain cache API instead.
    connection: Any = backend._cache
    kind: type = type(connection)  # (compared apart: no narrowing of Any)
    if kind is not RedisCacheClient:
        return None
    serializer = connection._serializer
    if type(serializer) is not RedisSerializer:
        return None
    kept = _clients.get(connection)
    if kept is None:
        client = connection._client(connection_pool=connection._get_connection_pool(True))
        kept = _Redis(client, serializer, client.register_script(_COUNT))
        _clients[connection] = kept
    return kept


def get_many(names: list[str]) -> dict[str, Any]:
    """``cache.get_many(names)`` on the default cache, in one round trip."""
    backend = caches["default"]
    fast = _redis(backend)
    if fast is None:
        found: dict[str, Any] = backend.get_many(names)
        return found
    values = fast.client.mget([backend.make_key(name) for name in names])
    return {
        name: fast.serializer.loads(value)
        for name, value in zip(names, values, strict=True)
        if value is not None
    }


def count(name: str, timeout: int) -> int:
    """Add one to the counter ``name`` and return the new count.

    A missing counter starts at one and lives ``timeout`` seconds. Atomic
    across every process sharing the cache, so that no two calls ever see
    the same count.
    """
    backend = caches["default"]
    fast = _redis(backend)
    if fast is not None:
        return int(fast.count(keys=[backend.make_key(name)], args=[timeout]))
    # The common case is one atomic increment of an existing counter. A
    # missing counter raises ValueError: create it (add is atomic, so of two
    # workers racing here exactly one creates it) and increment again; the
    # second ValueError can only mean it expired in between, so start over
    # once more. Three attempts, never an unbounded loop.
    for _ in range(3):
        try:
            return int(backend.incr(name))
        except ValueError:
            if backend.add(name, 1, timeout):
                return 1
    # The counter vanished between add and incr three times over: a cache
    # evicting under pressure. Count the call as the first of its window.
    return 1
