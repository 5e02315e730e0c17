"""A call's cache work on Django's own RedisCache: one round trip, same entries.

These tests need Redis on 127.0.0.1:6379 (skipped without it, failed under
CI). Each test has its own key prefix, so it never touches anyone else's
entries, and removes its own at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client as DjangoClient
from django.test import override_settings
from django.utils import timezone

from servicewire import keycache, sharedcache
from servicewire.models import ApiKey, AuditEntry
from tests.conftest import REDIS_ADDR, _reachable, services_required
from tests.test_keycache import call
from tests.test_throttle import fresh_window

pytestmark = pytest.mark.django_db

redis = pytest.importorskip("redis")

if not _reachable(REDIS_ADDR) and not services_required():
    pytest.skip(
        f"Redis is not reachable at {REDIS_ADDR[0]}:{REDIS_ADDR[1]}", allow_module_level=True
    )


@pytest.fixture
def redis_cache() -> Iterator[str]:
    """Django's RedisCache as the default cache, under a prefix of its own."""
    prefix = f"swtest-{uuid.uuid4().hex[:12]}"
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://{REDIS_ADDR[0]}:{REDIS_ADDR[1]}/0",
            "KEY_PREFIX": prefix,
        }
    }
    with override_settings(CACHES=caches):
        yield prefix
    server = redis.Redis(host=REDIS_ADDR[0], port=REDIS_ADDR[1])
    for name in server.scan_iter(f"{prefix}:*"):
        server.delete(name)
    server.close()


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Redis commands sent from now on, one entry per round trip."""
    sent: list[str] = []
    execute = redis.Redis.execute_command
    pipeline_execute = redis.client.Pipeline.execute

    def single(self: Any, *args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return execute(self, *args, **options)

    def pipelined(self: Any, *args: Any, **options: Any) -> Any:
        names = "+".join(str(c[0][0]) for c in self.command_stack)
        sent.append(f"MULTI({names})" if self.transaction else names)
        return pipeline_execute(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", single)
    monkeypatch.setattr(redis.client.Pipeline, "execute", pipelined)
    return sent


def sw_settings(**values: Any) -> Any:
    return override_settings(SERVICEWIRE={"REQUIRE_HTTPS": False, **values})


def test_a_call_asks_redis_once(
    redis_cache: str, client: DjangoClient, key: str, commands: list[str]
) -> None:
    assert keycache.enabled()
    assert call(client, key) == 200  # reads the key, caches it, notes its use
    commands.clear()
    for _ in range(3):
        assert call(client, key) == 200
    # The key's state, its last use and the address's failed logins: one MGET.
    assert commands == ["MGET"] * 3
    assert AuditEntry.objects.filter(status=200).count() == 4


def test_a_rate_costs_one_more_round_trip(
    redis_cache: str, client: DjangoClient, key: str, commands: list[str]
) -> None:
    with sw_settings(RATE="100/m"):
        assert call(client, key) == 200
        commands.clear()
        assert call(client, key) == 200
    # The counter made if absent and advanced, in one script.
    assert commands == ["MGET", "EVALSHA"]


def test_what_one_side_writes_the_other_reads(redis_cache: str) -> None:
    cache.set("servicewire:test:state", {"a": [1, 2]}, 60)
    cache.set("servicewire:test:number", 7, 60)
    found = sharedcache.get_many(
        ["servicewire:test:state", "servicewire:test:number", "servicewire:test:absent"]
    )
    assert found == {"servicewire:test:state": {"a": [1, 2]}, "servicewire:test:number": 7}

    assert [sharedcache.count("servicewire:test:counter", 30) for _ in range(3)] == [1, 2, 3]
    assert cache.get("servicewire:test:counter") == 3
    assert cache.incr("servicewire:test:counter") == 4
    assert sharedcache.count("servicewire:test:counter", 30) == 5
    ttl = redis.Redis(host=REDIS_ADDR[0], port=REDIS_ADDR[1]).ttl(
        cache.make_key("servicewire:test:counter")
    )
    assert 0 < ttl <= 30


def test_counts_are_exact_across_threads(redis_cache: str) -> None:
    def count(_: int) -> list[int]:
        return [sharedcache.count("servicewire:test:race", 60) for _ in range(50)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = [n for batch in pool.map(count, range(8), timeout=60) for n in batch]
    # Every call got its own number: none lost, none counted twice.
    assert sorted(seen) == list(range(1, 401))


def test_a_revoked_key_is_refused_on_the_next_call(
    redis_cache: str, client: DjangoClient, key: str
) -> None:
    assert call(client, key) == 200
    assert call(client, key) == 200  # served from Redis
    ApiKey.objects.filter(key_id=key.split("_")[1]).update(revoked=timezone.now())
    assert call(client, key) == 401


def test_failed_logins_stop_even_the_right_key(
    redis_cache: str, client: DjangoClient, key: str, make_key: Callable[..., str]
) -> None:
    key_id, secret = key.split("_")[1:]
    fresh_window(60, 15)  # the five calls in one fixed window of a minute
    with sw_settings(AUTH_FAILURE_RATE="3/m"):
        assert call(client, key) == 200
        for n in range(3):
            assert call(client, f"sw_{key_id}_{secret[:-4]}{n:04d}") == 401
        assert call(client, key) == 429
        assert call(client, make_key()) == 429
        assert call(client, "sw_nonsense") == 429
