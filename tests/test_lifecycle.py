"""Key lifecycle over HTTP: rotation with a grace period, expiry to the second,
disabling a client; administered with the real management command.

The same rules across three gunicorn workers are in test_production.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.utils import timezone

from servicewire import Client
from servicewire.errors import Unauthorized
from servicewire.models import ApiKey, AuditEntry, ClientApp
from tests.test_audit import assert_no_secret

pytestmark = pytest.mark.django_db(transaction=True)

KEY_RE = re.compile(r"sw_[A-Za-z0-9]{12}_[A-Za-z0-9]{43}")


@pytest.fixture(autouse=True)
def empty_counters() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("servicewire", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def new_key(name: str, *options: str) -> str:
    if not ClientApp.objects.filter(name=name).exists():
        run("client", "add", name)
    return run("key", "create", name, *options).splitlines()[-1]


def status(url: str, key: str) -> int:
    response = httpx.post(
        f"{url}/services/add",
        json={"a": 1, "b": 2},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    return response.status_code


def key_id(plain: str) -> str:
    return plain.split("_")[1]


def test_rotation_overlaps_for_the_grace_period_then_the_old_key_is_refused(
    live_server: Any,
) -> None:
    old = new_key("rotating")
    output = run("key", "rotate", key_id(old), "--grace", "2s")
    rotated_at = time.monotonic()
    *explanation, new = output.splitlines()
    assert KEY_RE.fullmatch(new) and new != old
    assert all(new not in line and old.split("_")[2] not in line for line in explanation)

    stored = ApiKey.objects.get(key_id=key_id(old))
    assert stored.replaced_by is not None and stored.replaced_by.key_id == key_id(new)
    assert stored.replaced_by.client == stored.client
    assert stored.expires is not None
    assert timedelta(seconds=1) < stored.expires - timezone.now() <= timedelta(seconds=2)

    # Both work during the grace period, the old one through a client that
    # keeps its connection open across the deadline.
    with Client(f"{live_server.url}/services/", old) as sw:
        assert sw.add(a=1, b=1) == 2
        assert status(live_server.url, new) == 200
        time.sleep(max(0.0, 2.2 - (time.monotonic() - rotated_at)))
        with pytest.raises(Unauthorized):
            sw.add(a=1, b=1)
    assert status(live_server.url, old) == 401
    assert status(live_server.url, new) == 200

    statuses = list(AuditEntry.objects.order_by("pk").values_list("status", "key_id"))
    assert statuses == [
        (200, key_id(old)),
        (200, key_id(new)),
        (401, ""),
        (401, ""),
        (200, key_id(new)),
    ]
    assert_no_secret(old, new)


def test_rotation_with_no_grace_ends_the_old_key_at_once(live_server: Any) -> None:
    old = new_key("leaked")
    new = run("key", "rotate", key_id(old), "--grace", "0s").splitlines()[-1]
    assert status(live_server.url, old) == 401
    assert status(live_server.url, new) == 200
    assert_no_secret(old, new)


def test_rotation_defaults_to_a_day_and_never_extends_an_earlier_expiry() -> None:
    lasting = new_key("lasting")
    run("key", "rotate", key_id(lasting))
    expires = ApiKey.objects.get(key_id=key_id(lasting)).expires
    assert expires is not None
    assert abs(expires - (timezone.now() + timedelta(hours=24))) < timedelta(seconds=30)

    short = new_key("short-lived", "--expires-in", "1h")
    before = ApiKey.objects.get(key_id=key_id(short)).expires
    successor = run("key", "rotate", key_id(short), "--grace", "7d", "--expires-in", "90d")
    assert ApiKey.objects.get(key_id=key_id(short)).expires == before
    new_expiry = ApiKey.objects.get(key_id=key_id(successor.splitlines()[-1])).expires
    assert new_expiry is not None
    assert abs(new_expiry - (timezone.now() + timedelta(days=90))) < timedelta(seconds=30)


def test_a_pasted_whole_key_is_rotated_by_its_id_and_never_echoed() -> None:
    old = new_key("pasted")
    output = run("key", "rotate", old)
    assert old.split("_")[2] not in output
    assert ApiKey.objects.get(key_id=key_id(old)).replaced_by is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grace", "soon"], "--grace: not a duration"),
        (["--grace=-1s"], "--grace: not a duration"),
        (["--expires-in", "0s"], "--expires-in: a key must live longer"),
    ],
)
def test_bad_rotation_options_change_nothing(args: list[str], message: str) -> None:
    old = new_key("careful")
    with pytest.raises(CommandError, match=message):
        run("key", "rotate", key_id(old), *args)
    stored = ApiKey.objects.get(key_id=key_id(old))
    assert (stored.replaced_by, stored.expires) == (None, None)
    assert ApiKey.objects.count() == 1


def test_what_cannot_be_rotated_is_refused_with_the_way_forward() -> None:
    revoked = new_key("refused")
    run("key", "revoke", key_id(revoked))
    with pytest.raises(CommandError, match=r"is revoked; issue a new one with: .*key create"):
        run("key", "rotate", key_id(revoked))

    expired = new_key("refused")
    ApiKey.objects.filter(key_id=key_id(expired)).update(expires=timezone.now())
    with pytest.raises(CommandError, match="has expired"):
        run("key", "rotate", key_id(expired))

    rotated = new_key("refused")
    successor = key_id(run("key", "rotate", key_id(rotated)).splitlines()[-1])
    with pytest.raises(CommandError, match=f"already rotated \\(to {successor}\\)"):
        run("key", "rotate", key_id(rotated))

    signing = ApiKey.objects.create(
        client=ClientApp.objects.get(name="refused"),
        key_id="SigningKey01",
        public_key="MCowBQYDK2VwAyEA" + "A" * 44,
    )
    with pytest.raises(CommandError, match=r"signing key.*key create refused --public-key"):
        run("key", "rotate", signing.key_id)

    with pytest.raises(CommandError, match="No API key with id 'NoSuchKey123'"):
        run("key", "rotate", "NoSuchKey123")
    with pytest.raises(CommandError, match="Not a key id"):
        run("key", "rotate", "short")
    # Nothing was issued by any refusal.
    assert ApiKey.objects.filter(client__name="refused").count() == 5


def test_expiry_is_enforced_to_the_second(live_server: Any) -> None:
    plain = new_key("ephemeral", "--expires-in", "2s")
    created = time.monotonic()
    assert status(live_server.url, plain) == 200
    time.sleep(max(0.0, 1.6 - (time.monotonic() - created)))
    assert status(live_server.url, plain) == 200
    time.sleep(max(0.0, 2.1 - (time.monotonic() - created)))
    assert status(live_server.url, plain) == 401
    assert list(AuditEntry.objects.order_by("pk").values_list("status", flat=True)) == [
        200,
        200,
        401,
    ]
    assert_no_secret(plain)


def test_disabling_a_client_stops_all_its_keys_at_once(live_server: Any) -> None:
    first = new_key("fleet")
    second = new_key("fleet")
    bystander = new_key("bystander")
    with Client(f"{live_server.url}/services/", first) as sw:
        assert sw.add(a=1, b=1) == 2
        assert "Disabled client 'fleet'" in run("client", "disable", "fleet")
        # The same open connection: refused on its very next call.
        with pytest.raises(Unauthorized):
            sw.add(a=1, b=1)
    assert status(live_server.url, second) == 401
    assert status(live_server.url, bystander) == 200
    assert "already disabled" in run("client", "disable", "fleet")

    assert "Enabled client 'fleet'" in run("client", "enable", "fleet")
    assert status(live_server.url, first) == 200
    assert status(live_server.url, second) == 200
    with pytest.raises(CommandError, match="No client named 'armada'"):
        run("client", "disable", "armada")

    rows = list(AuditEntry.objects.order_by("pk").values_list("status", "client_name"))
    assert rows == [
        (200, "fleet"),
        (401, ""),
        (401, ""),
        (200, "bystander"),
        (200, "fleet"),
        (200, "fleet"),
    ]
    assert_no_secret(first, second, bystander)
