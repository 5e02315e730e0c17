"""API keys: their form, their storage, and who they let in."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.http import HttpRequest
from django.test import RequestFactory, override_settings
from django.utils import timezone

from servicewire.auth import issue_key, parse_duration
from servicewire.models import ApiKey, ClientApp
from tests.conftest import authenticate

pytestmark = pytest.mark.django_db

KEY_FORMAT = re.compile(r"sw_[A-Za-z0-9]{12}_[A-Za-z0-9]{43}")


@pytest.fixture
def client_app() -> ClientApp:
    return ClientApp.objects.create(name="desktop", scopes=["science"])


def bearer(plain: str) -> HttpRequest:
    return RequestFactory().post("/services/add", headers={"Authorization": f"Bearer {plain}"})


def test_issued_key_has_the_documented_format(client_app: ClientApp) -> None:
    key, plain = issue_key(client_app)
    assert KEY_FORMAT.fullmatch(plain)
    assert plain.split("_")[1] == key.key_id


def test_keys_are_unique(client_app: ClientApp) -> None:
    plains = {issue_key(client_app)[1] for _ in range(20)}
    assert len(plains) == 20


def test_database_row_holds_a_hash_and_never_the_secret(client_app: ClientApp) -> None:
    key, plain = issue_key(client_app)
    secret = plain.rsplit("_", 1)[1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM servicewire_apikey WHERE id = %s", [key.pk])
        row = cursor.fetchone()
    assert row is not None
    assert not any(secret in str(column) for column in row)
    assert re.fullmatch(r"[0-9a-f]{64}", key.secret_hash)


def test_valid_key_authenticates_its_client(client_app: ClientApp) -> None:
    key, plain = issue_key(client_app)
    caller = authenticate(bearer(plain))
    assert caller is not None
    assert caller.client == client_app
    assert caller.key_id == key.key_id
    assert caller.scopes == {"science"}


def test_wrong_secret_and_unknown_key_id_are_refused_alike(client_app: ClientApp) -> None:
    key, plain = issue_key(client_app)
    wrong_secret = f"sw_{key.key_id}_{'A' * 43}"
    unknown_id = f"sw_{'B' * 12}_{plain.rsplit('_', 1)[1]}"
    assert authenticate(bearer(wrong_secret)) is None
    assert authenticate(bearer(unknown_id)) is None


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Bearer sw_short_secret", "Bearer not-a-key"],
)
def test_missing_or_malformed_credentials_authenticate_nobody(
    client_app: ClientApp, header: str
) -> None:
    issue_key(client_app)
    request = RequestFactory().post("/services/add", headers={"Authorization": header})
    assert authenticate(request) is None


def test_revoked_key_is_refused(client_app: ClientApp) -> None:
    key, plain = issue_key(client_app)
    ApiKey.objects.filter(pk=key.pk).update(revoked=timezone.now())
    assert authenticate(bearer(plain)) is None


def test_expired_key_is_refused_and_unexpired_key_accepted(client_app: ClientApp) -> None:
    _, expired = issue_key(client_app, expires=timezone.now() - timedelta(seconds=1))
    _, fresh = issue_key(client_app, expires=timezone.now() + timedelta(hours=1))
    assert authenticate(bearer(expired)) is None
    assert authenticate(bearer(fresh)) is not None


def test_disabled_client_keys_are_refused_until_enabled(client_app: ClientApp) -> None:
    _, plain = issue_key(client_app)
    ClientApp.objects.filter(pk=client_app.pk).update(is_active=False)
    assert authenticate(bearer(plain)) is None
    ClientApp.objects.filter(pk=client_app.pk).update(is_active=True)
    assert authenticate(bearer(plain)) is not None


def test_last_used_written_at_most_once_per_resolution(client_app: ClientApp) -> None:
    key, plain = issue_key(client_app)
    assert key.last_used is None

    authenticate(bearer(plain))
    key.refresh_from_db()
    first = key.last_used
    assert first is not None

    authenticate(bearer(plain))
    key.refresh_from_db()
    assert key.last_used == first

    # Once the resolution has passed, the next call records its time.
    ApiKey.objects.filter(pk=key.pk).update(last_used=first - timedelta(seconds=61))
    authenticate(bearer(plain))
    key.refresh_from_db()
    assert key.last_used is not None and key.last_used >= first


def test_last_used_resolution_is_a_setting(client_app: ClientApp) -> None:
    key, plain = issue_key(client_app)
    with override_settings(SERVICEWIRE={"REQUIRE_HTTPS": False, "KEY_LAST_USED_RESOLUTION": 0}):
        authenticate(bearer(plain))
        key.refresh_from_db()
        first = key.last_used
        authenticate(bearer(plain))
        key.refresh_from_db()
    assert first is not None and key.last_used is not None
    assert key.last_used > first


def test_refused_key_does_not_touch_last_used(client_app: ClientApp) -> None:
    key, plain = issue_key(client_app)
    ApiKey.objects.filter(pk=key.pk).update(revoked=timezone.now())
    authenticate(bearer(plain))
    key.refresh_from_db()
    assert key.last_used is None


def test_keys_survive_secret_key_rotation_through_fallbacks(client_app: ClientApp) -> None:
    _, plain = issue_key(client_app)
    with override_settings(SECRET_KEY="a-new-secret-key", SECRET_KEY_FALLBACKS=[]):
        assert authenticate(bearer(plain)) is None
    with override_settings(
        SECRET_KEY="a-new-secret-key",
        SECRET_KEY_FALLBACKS=["test-only-secret-key-not-for-production"],
    ):
        assert authenticate(bearer(plain)) is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_parse_duration_reads_the_documented_units(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "90", "3w", "-1d", "1.5h", "d"])
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
