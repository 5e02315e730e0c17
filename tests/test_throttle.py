"""Rate limits, attacked over HTTP against a live server.

The live server shares this process's local-memory cache, so each test
starts from empty counters. Windows are fixed and aligned on the clock: a test
that must fit its calls into one window first waits, if need be, for a fresh
one (a few seconds at most).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import override_settings

from servicewire import Client
from servicewire.errors import RateLimited, Unauthorized
from servicewire.models import AuditEntry, ClientApp
from servicewire.throttle import Rate, parse_rate
from tests.test_audit import assert_no_secret

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def empty_counters() -> Iterator[None]:
    cache.clear()
    yield
    # An exhausted address must not refuse the next test's calls.
    cache.clear()


def fresh_window(period: int, needed: float) -> None:
    """Wait, if need be, until the current window has ``needed`` seconds left."""
    left = period - time.time() % period
    if left < needed:
        time.sleep(left + 0.05)


def sw_settings(**values: Any) -> Any:
    return override_settings(SERVICEWIRE={"REQUIRE_HTTPS": False, **values})


def call_add(url: str, key: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/services/add",
        json={"a": 1, "b": 2},
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=10,
    )


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("600/m", Rate(600, 60)),
        ("10/s", Rate(10, 1)),
        ("5000/h", Rate(5000, 3600)),
        ("100000/d", Rate(100000, 86400)),
        (" 7 / m ", Rate(7, 60)),
    ],
)
def test_rates_are_read(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    "text", ["", "600", "600/", "/m", "600/min", "600/w", "-1/m", "0/m", "1e3/m", "six/m", "1/m/m"]
)
def test_garbage_rates_are_refused_with_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate(text)


def test_command_refuses_a_garbage_rate_and_adds_nothing() -> None:
    with pytest.raises(CommandError, match=r"--rate: not a rate: 'fast'.*600/m"):
        call_command("servicewire", "client", "add", "greedy", "--rate", "fast")
    assert not ClientApp.objects.filter(name="greedy").exists()
    call_command("servicewire", "client", "add", "modest", "--rate", "600/m", stdout=None)
    assert ClientApp.objects.get(name="modest").rate == "600/m"


def test_admin_refuses_a_garbage_rate(admin_client: Any) -> None:
    client = ClientApp.objects.create(name="edited", rate="10/m")
    form = {
        "name": "edited",
        "is_active": "on",
        "scopes": "",
        "notes": "",
        "keys-TOTAL_FORMS": "0",
        "keys-INITIAL_FORMS": "0",
    }
    page = admin_client.post(
        f"/admin/servicewire/clientapp/{client.pk}/change/", {**form, "rate": "lots"}
    )
    assert page.status_code == 200
    assert "not a rate" in page.content.decode()
    client.refresh_from_db()
    assert client.rate == "10/m"
    page = admin_client.post(
        f"/admin/servicewire/clientapp/{client.pk}/change/", {**form, "rate": "5000/h"}
    )
    assert page.status_code == 302
    client.refresh_from_db()
    assert client.rate == "5000/h"


def test_the_601st_call_in_a_minute_is_refused(
    live_server: Any, make_key: Callable[..., str]
) -> None:
    key = make_key("busy")
    with sw_settings(RATE="600/m"):
        fresh_window(60, needed=15)
        started = time.monotonic()
        with Client(f"{live_server.url}/services/", key) as sw:
            # The first call also records the key's last use: a write best
            # not raced by the concurrent calls below on SQLite.
            assert sw.add(a=1, b=0) == 1

        def calls(n: int) -> list[int]:
            with Client(f"{live_server.url}/services/", key) as sw:
                return [sw.add(a=1, b=i) for i in range(n)]

        # From twelve connections at once (Django's test server takes some
        # 40 ms a call): the counter must not lose an increment.
        batches = [50] * 11 + [49]
        with ThreadPoolExecutor(max_workers=12) as pool:
            results = [r for batch in pool.map(calls, batches, timeout=60) for r in batch]
        assert len(results) == 599
        assert time.monotonic() - started < 15, "too slow to fit one window"

        refused = call_add(live_server.url, key)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "RateLimited"
        retry_after = int(refused.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        with Client(f"{live_server.url}/services/", key) as sw, pytest.raises(RateLimited) as err:
            sw.add(a=1, b=1)
        assert err.value.retry_after is not None and 1 <= err.value.retry_after <= 60

    # The refusals came one at a time and are all in the trail. (Of the 600
    # concurrent calls, the live server's in-memory SQLite refuses some
    # writers outright, "database table is locked"; test_production counts
    # every row of concurrent calls on PostgreSQL.)
    rows = AuditEntry.objects.filter(client_name="busy")
    assert 0 < rows.filter(status=200).count() <= 600
    limited = rows.filter(status=429)
    assert limited.count() == 2
    assert set(limited.values_list("error_type", "service", "key_id")) == {
        ("RateLimited", "add", key.split("_")[1])
    }
    assert_no_secret(key)


def test_concurrent_calls_cannot_overspend_the_allowance(
    live_server: Any, make_key: Callable[..., str]
) -> None:
    key = make_key("racer")
    ClientApp.objects.filter(name="racer").update(rate="25/m")
    fresh_window(60, needed=20)
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(
            pool.map(lambda _: call_add(live_server.url, key).status_code, range(60), timeout=60)
        )
    assert statuses.count(200) == 25
    assert statuses.count(429) == 35
    # (The audit rows of concurrent calls are counted on PostgreSQL in
    # test_production: the in-memory SQLite of the live server refuses
    # concurrent writers outright, "database table is locked".)


def test_a_client_rate_overrides_the_site_rate(
    live_server: Any, make_key: Callable[..., str]
) -> None:
    default_key = make_key("default-rate")
    own_key = make_key("own-rate")
    ClientApp.objects.filter(name="own-rate").update(rate="5/m")
    with sw_settings(RATE="2/m"):
        fresh_window(60, needed=15)
        assert [call_add(live_server.url, default_key).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        # Each client has its own allowance: the first one's being spent
        # takes nothing from the second.
        assert [call_add(live_server.url, own_key).status_code for _ in range(6)] == [
            *[200] * 5,
            429,
        ]


def test_no_rate_means_no_limit(live_server: Any, key: str) -> None:
    with Client(f"{live_server.url}/services/", key) as sw:
        assert sw.add(a=0, b=0) == 0

    def calls(first: int) -> list[int]:
        with Client(f"{live_server.url}/services/", key) as sw:
            return [sw.add(a=first, b=i) for i in range(15)]

    with ThreadPoolExecutor(max_workers=10) as pool:
        assert sum(len(batch) for batch in pool.map(calls, range(10), timeout=60)) == 150


def test_failed_logins_are_limited_per_address_before_any_credential_is_checked(
    live_server: Any, key: str
) -> None:
    key_id, secret = key.split("_")[1:]
    fresh_window(60, needed=20)
    # Guesses at the secret of a known key id: 30 a minute, then nothing,
    # not even the right key, is checked from this address.
    for n in range(30):
        guess = f"sw_{key_id}_{secret[:-4]}{n:04d}"
        assert call_add(live_server.url, guess).status_code == 401
    refused = call_add(live_server.url, key)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "RateLimited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert call_add(live_server.url, "sw_nonsense").status_code == 429

    rows = AuditEntry.objects.all()
    assert rows.filter(status=401, error_type="Unauthorized", client__isnull=True).count() == 30
    limited = rows.filter(status=429)
    assert limited.count() == 2
    # Refused before the credential was looked at: no client is named.
    assert set(limited.values_list("error_type", "client_name", "remote_addr")) == {
        ("RateLimited", "", "127.0.0.1")
    }
    assert_no_secret(key, secret)


def test_a_spoofed_forwarded_address_does_not_escape_the_limit(live_server: Any, key: str) -> None:
    fresh_window(60, needed=20)
    with sw_settings(AUTH_FAILURE_RATE="5/m"):
        for n in range(5):
            wrong = call_add(live_server.url, "sw_bad", **{"X-Forwarded-For": f"10.0.0.{n}"})
            assert wrong.status_code == 401
        again = call_add(live_server.url, key, **{"X-Forwarded-For": "10.0.0.99"})
        assert again.status_code == 429
    # No proxy is trusted: the header is the client's own word and ignored.
    assert set(AuditEntry.objects.values_list("remote_addr", flat=True)) == {"127.0.0.1"}


def test_behind_a_trusted_proxy_the_rightmost_forwarded_address_counts(
    live_server: Any, key: str
) -> None:
    fresh_window(60, needed=20)
    with sw_settings(AUTH_FAILURE_RATE="5/m", TRUSTED_PROXIES=1):
        for _ in range(5):
            forged = {"X-Forwarded-For": "1.2.3.4, 203.0.113.7"}
            assert call_add(live_server.url, "sw_bad", **forged).status_code == 401
        assert call_add(live_server.url, key, **forged).status_code == 429
        # Another address behind the same proxy is not held back.
        other = {"X-Forwarded-For": "1.2.3.4, 203.0.113.8"}
        assert call_add(live_server.url, key, **other).status_code == 200
    addresses = list(AuditEntry.objects.order_by("time").values_list("remote_addr", flat=True))
    assert addresses == ["203.0.113.7"] * 6 + ["203.0.113.8"]


def test_in_hide_mode_an_address_over_the_limit_sees_only_404(live_server: Any, key: str) -> None:
    fresh_window(60, needed=20)
    with sw_settings(AUTH_FAILURE_RATE="3/m", HIDE_FROM_UNAUTHENTICATED=True):
        assert [call_add(live_server.url, "sw_bad").status_code for _ in range(3)] == [404] * 3
        hidden = call_add(live_server.url, key)
        assert hidden.status_code == 404
        assert "Retry-After" not in hidden.headers
    rows = list(AuditEntry.objects.order_by("time").values_list("status", "error_type"))
    assert rows == [(404, "Unauthorized")] * 3 + [(404, "RateLimited")]
    assert_no_secret(key)


def test_a_bad_rate_setting_fails_closed(live_server: Any, key: str) -> None:
    with sw_settings(RATE="plenty"):
        response = call_add(live_server.url, key)
    assert response.status_code == 500
    assert "plenty" not in response.text
    assert AuditEntry.objects.get().status == 500


def test_unauthorized_after_limit_window_ends(live_server: Any, key: str) -> None:
    """A per-second limit: the window's end lets the address try again."""
    with sw_settings(AUTH_FAILURE_RATE="2/s"):
        fresh_window(1, needed=0.6)
        for _ in range(2):
            with (
                Client(f"{live_server.url}/services/", "sw_bad") as sw,
                pytest.raises(Unauthorized),
            ):
                sw.add(a=1, b=1)
        assert call_add(live_server.url, key).status_code == 429
        fresh_window(1, needed=0.99)
        assert call_add(live_server.url, key).status_code == 200


def test_system_checks_flag_a_bad_rate_and_a_cache_that_cannot_count() -> None:
    from servicewire.checks import check_cache, check_rates

    with sw_settings(RATE="lots", AUTH_FAILURE_RATE="30/m"):
        assert [m.id for m in check_rates(None)] == ["servicewire.E002"]
    with sw_settings(AUTH_FAILURE_RATE="often"):
        assert [m.id for m in check_rates(None)] == ["servicewire.E002"]
    assert check_rates(None) == []
    dummy = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    with override_settings(CACHES=dummy):
        assert [m.id for m in check_cache(None)] == ["servicewire.W004"]
        with sw_settings(AUTH_FAILURE_RATE=""):
            assert check_cache(None) == []
    assert check_cache(None) == []
