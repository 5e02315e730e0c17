"""Key look-ups cached in a shared cache, and forgotten on every change.

A file-based cache stands in for Redis here: it is shared between processes,
so servicewire uses it. The gunicorn tests in test_production.py check the
same rules across workers with Redis itself.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client as DjangoClient
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from servicewire import keycache
from servicewire.models import ApiKey, ClientApp

pytestmark = pytest.mark.django_db


@pytest.fixture
def shared_cache(tmp_path: Path) -> Iterator[None]:
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        }
    }
    with override_settings(CACHES=caches):
        yield


def call(client: DjangoClient, key: str) -> int:
    response = client.post(
        "/services/add",
        b'{"a": 1, "b": 2}',
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )
    return int(response.status_code)


def statements(client: DjangoClient, key: str) -> list[str]:
    """The SQL statements one call runs (savepoints aside: they come from the
    test's own transaction, not from servicewire)."""
    with CaptureQueriesContext(connection) as captured:
        assert call(client, key) == 200
    return [q["sql"].split()[0] for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]


def key_row(plain: str) -> ApiKey:
    return ApiKey.objects.get(key_id=plain.split("_")[1])


def test_a_shared_cache_saves_the_key_query(
    shared_cache: None, client: DjangoClient, key: str
) -> None:
    assert keycache.enabled()
    # The first call reads the key (and caches it) and notes its first use.
    assert statements(client, key) == ["SELECT", "UPDATE", "INSERT"]
    # What is left per call: the audit INSERT alone.
    assert statements(client, key) == ["INSERT"]
    assert statements(client, key) == ["INSERT"]


def test_a_process_local_cache_is_never_used(client: DjangoClient, key: str) -> None:
    assert not keycache.enabled()  # the test site's LocMemCache
    assert statements(client, key) == ["SELECT", "UPDATE", "INSERT"]
    assert statements(client, key) == ["SELECT", "INSERT"]


@pytest.mark.parametrize(
    "change",
    [
        lambda k: ApiKey.objects.filter(pk=k.pk).update(revoked=timezone.now()),
        lambda k: setattr(k, "revoked", timezone.now()) or k.save(),
        lambda k: ApiKey.objects.filter(pk=k.pk).delete(),
        lambda k: k.delete(),
        lambda k: ClientApp.objects.filter(pk=k.client_id).update(is_active=False),
        lambda k: setattr(k.client, "is_active", False) or k.client.save(),
        lambda k: ClientApp.objects.filter(pk=k.client_id).delete(),
    ],
    ids=[
        "key-update",
        "key-save",
        "key-queryset-delete",
        "key-delete",
        "client-update",
        "client-save",
        "client-delete",
    ],
)
def test_every_change_is_seen_on_the_next_call(
    shared_cache: None, client: DjangoClient, key: str, change: Callable[[ApiKey], Any]
) -> None:
    assert call(client, key) == 200
    assert call(client, key) == 200  # now served from the cache
    change(key_row(key))
    assert call(client, key) == 401


def test_expiry_is_checked_on_every_call_even_from_the_cache(
    shared_cache: None, client: DjangoClient, key: str
) -> None:
    row = key_row(key)
    row.expires = timezone.now() + datetime.timedelta(seconds=30)
    row.save()
    assert call(client, key) == 200
    assert call(client, key) == 200
    later = timezone.now() + datetime.timedelta(seconds=31)
    cached = keycache.load(row.key_id).state
    assert cached is not None and cached["key"]["expires"] == row.expires
    from servicewire import auth

    original = auth.timezone.now
    auth.timezone.now = lambda: later  # type: ignore[assignment]
    try:
        assert call(client, key) == 401
    finally:
        auth.timezone.now = original  # type: ignore[assignment]


def test_scope_changes_reach_the_next_call(
    shared_cache: None, client: DjangoClient, make_key: Callable[..., str]
) -> None:
    plain = make_key("scientist", scopes=["science"])
    body = b'{"samples": [1.0, 2.0]}'
    headers = {"Authorization": f"Bearer {plain}"}
    post = lambda: client.post(  # noqa: E731
        "/services/science.spectrum", body, content_type="application/json", headers=headers
    )
    assert post().status_code == 200
    assert post().status_code == 200
    ClientApp.objects.filter(name="scientist").update(scopes=[])
    assert post().status_code == 403


@pytest.mark.django_db(transaction=True)
def test_a_row_read_before_a_revocation_committed_is_never_served(
    shared_cache: None, key: str
) -> None:
    """A request that read the key just before its revocation committed, and
    caches what it read afterwards, must not make the revoked key live on."""
    from servicewire.auth import usable_key

    row = key_row(key)
    # The slow request: no entry yet, so it takes the generation and reads...
    generation = keycache.current_generation(row.key_id, keycache.load(row.key_id).generation)
    stale = ApiKey.objects.select_related("client").get(pk=row.pk)
    # ...then the revocation commits...
    with transaction.atomic():
        ApiKey.objects.filter(pk=row.pk).update(revoked=timezone.now())
    # ...and only then does the slow request store what it read.
    keycache.store(stale, generation)
    assert usable_key(row.key_id) is None


def test_last_use_is_written_once_per_period_across_workers(
    shared_cache: None, client: DjangoClient, key: str
) -> None:
    row = key_row(key)
    assert call(client, key) == 200
    first = key_row(key).last_used
    assert first is not None
    for _ in range(3):
        assert call(client, key) == 200
    assert key_row(key).last_used == first
    assert row.revoked is None


def test_a_key_from_the_cache_carries_its_rows_values(
    shared_cache: None, make_key: Callable[..., str]
) -> None:
    from servicewire.auth import usable_key

    plain = make_key("scientist", scopes=["science"])
    ClientApp.objects.filter(name="scientist").update(rate="5/s", notes="kept out of the cache")
    row = ApiKey.objects.select_related("client").get(key_id=plain.split("_")[1])
    assert usable_key(row.key_id) is not None  # read from the database, then cached
    cached = usable_key(row.key_id)
    assert cached is not None and keycache.load(row.key_id).state is not None
    for name in ("pk", "client_id", "key_id", "secret_hash", "expires", "revoked"):
        assert getattr(cached, name) == getattr(row, name), name
    for name in ("pk", "name", "is_active", "scopes", "allow_pickle", "rate", "user_id"):
        assert getattr(cached.client, name) == getattr(row.client, name), name
    # What the cache does not hold is left to the database, not made up.
    assert {"created", "notes"} <= cached.client.get_deferred_fields()
    assert cached.client.notes == "kept out of the cache"
