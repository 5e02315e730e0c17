"""The Django admin: keys shown once, hashes never, revocation in one click."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from servicewire.auth import issue_key
from servicewire.models import ApiKey, ClientApp
from tests.conftest import authenticate

pytestmark = pytest.mark.django_db

KEY_FORMAT = re.compile(r"sw_[A-Za-z0-9]{12}_[A-Za-z0-9]{43}")
KEYS_URL = reverse("admin:servicewire_apikey_changelist")
ADD_KEY_URL = reverse("admin:servicewire_apikey_add")


@pytest.fixture
def desktop() -> ClientApp:
    return ClientApp.objects.create(name="desktop", scopes=["science"])


def calls_with(plain: str) -> bool:
    request = RequestFactory().post("/services/add", headers={"Authorization": f"Bearer {plain}"})
    return authenticate(request) is not None


def issue_in_admin(admin_client: Client, client_app: ClientApp, **extra: str) -> str:
    """Issue a key through the admin's add form; return the page it answers with."""
    data = {"client": str(client_app.pk), "expires_0": "", "expires_1": "", **extra}
    response = admin_client.post(ADD_KEY_URL, data)
    assert response.status_code == 200
    return response.content.decode()


def key_pages(key: ApiKey) -> list[str]:
    """Every admin page about keys and clients, once ``key`` exists."""
    client_pk = key.client.pk
    return [
        KEYS_URL,
        f"{KEYS_URL}?state=active",
        f"{KEYS_URL}?q={key.key_id}",
        ADD_KEY_URL,
        reverse("admin:servicewire_apikey_change", args=[key.pk]),
        reverse("admin:servicewire_apikey_history", args=[key.pk]),
        reverse("admin:servicewire_apikey_delete", args=[key.pk]),
        reverse("admin:servicewire_clientapp_changelist"),
        reverse("admin:servicewire_clientapp_add"),
        reverse("admin:servicewire_clientapp_change", args=[client_pk]),
        reverse("admin:servicewire_clientapp_history", args=[client_pk]),
        reverse("admin:servicewire_clientapp_delete", args=[client_pk]),
        reverse("admin:index"),
        reverse("admin:app_list", args=["servicewire"]),
    ]


def test_issuing_a_key_shows_it_once(admin_client: Client, desktop: ClientApp) -> None:
    page = issue_in_admin(admin_client, desktop)
    shown = KEY_FORMAT.findall(page)
    assert len(set(shown)) == 1
    plain = shown[0]
    key = ApiKey.objects.get()
    assert plain.split("_")[1] == key.key_id
    assert key.client == desktop
    assert key.expires is None
    assert "cannot be shown again" in page
    assert calls_with(plain)


def test_issued_key_page_is_not_cached(admin_client: Client, desktop: ClientApp) -> None:
    data = {"client": str(desktop.pk), "expires_0": "", "expires_1": ""}
    response = admin_client.post(ADD_KEY_URL, data)
    assert "no-store" in response["Cache-Control"]


def test_issued_key_is_kept_nowhere_it_could_be_read_again(
    admin_client: Client, desktop: ClientApp
) -> None:
    plain = KEY_FORMAT.findall(issue_in_admin(admin_client, desktop))[0]
    secret = plain.rsplit("_", 1)[1]
    key = ApiKey.objects.get()
    for url in key_pages(key):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert secret not in response.content.decode(), url
    # Nor in the session or a message cookie waiting for the next page.
    assert not any(secret in morsel.value for morsel in admin_client.cookies.values())
    assert all(secret not in str(value) for value in admin_client.session.values())


def test_secret_hash_appears_on_no_admin_page(admin_client: Client, desktop: ClientApp) -> None:
    key, _ = issue_key(desktop, expires=timezone.now() + timedelta(days=1))
    for url in key_pages(key):
        html = admin_client.get(url).content.decode()
        assert "secret_hash" not in html, url
        assert "secret hash" not in html.lower(), url
        assert key.secret_hash not in html, url


def test_issue_with_expiry(admin_client: Client, desktop: ClientApp) -> None:
    when = timezone.localtime() + timedelta(days=30)
    issue_in_admin(
        admin_client,
        desktop,
        expires_0=when.strftime("%Y-%m-%d"),
        expires_1=when.strftime("%H:%M:%S"),
    )
    key = ApiKey.objects.get()
    assert key.expires is not None
    assert abs(key.expires - when) < timedelta(seconds=1)


def test_issue_refuses_an_expiry_in_the_past(admin_client: Client, desktop: ClientApp) -> None:
    past = timezone.localtime() - timedelta(days=1)
    page = issue_in_admin(
        admin_client,
        desktop,
        expires_0=past.strftime("%Y-%m-%d"),
        expires_1=past.strftime("%H:%M:%S"),
    )
    assert "must be in the future" in page
    assert not ApiKey.objects.exists()
    assert not KEY_FORMAT.search(page)


def test_issue_link_on_the_client_page_preselects_the_client(
    admin_client: Client, desktop: ClientApp
) -> None:
    page = admin_client.get(
        reverse("admin:servicewire_clientapp_change", args=[desktop.pk])
    ).content.decode()
    link = f"{ADD_KEY_URL}?client={desktop.pk}"
    assert link in page
    form = admin_client.get(link).content.decode()
    assert re.search(rf'<option value="{desktop.pk}" selected>desktop</option>', form)


def test_only_the_expiry_can_change_after_issue(admin_client: Client, desktop: ClientApp) -> None:
    other = ClientApp.objects.create(name="other")
    key, plain = issue_key(desktop)
    later = timezone.localtime() + timedelta(days=7)
    response = admin_client.post(
        reverse("admin:servicewire_apikey_change", args=[key.pk]),
        {
            "expires_0": later.strftime("%Y-%m-%d"),
            "expires_1": later.strftime("%H:%M:%S"),
            "client": str(other.pk),
            "key_id": "AAAAAAAAAAAA",
            "secret_hash": "0" * 64,
            "revoked_0": "2000-01-01",
            "revoked_1": "00:00:00",
        },
    )
    assert response.status_code == 302
    changed = ApiKey.objects.get(pk=key.pk)
    assert changed.expires is not None
    assert abs(changed.expires - later) < timedelta(seconds=1)
    assert (changed.client, changed.key_id, changed.secret_hash, changed.revoked) == (
        desktop,
        key.key_id,
        key.secret_hash,
        None,
    )
    assert calls_with(plain)


def test_revoke_action_revokes_the_selected_keys(admin_client: Client, desktop: ClientApp) -> None:
    (first, first_plain), (second, _), (kept, kept_plain) = (issue_key(desktop) for _ in range(3))
    response = admin_client.post(
        KEYS_URL,
        {"action": "revoke_keys", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    assert "Revoked 2 key(s)" in response.content.decode()
    assert ApiKey.objects.filter(revoked__isnull=False).count() == 2
    assert not calls_with(first_plain)
    assert calls_with(kept_plain)
    assert ApiKey.objects.get(pk=kept.pk).revoked is None


def test_revoke_action_leaves_earlier_revocations_alone(
    admin_client: Client, desktop: ClientApp
) -> None:
    key, _ = issue_key(desktop)
    long_ago = timezone.now() - timedelta(days=3)
    ApiKey.objects.filter(pk=key.pk).update(revoked=long_ago)
    response = admin_client.post(
        KEYS_URL, {"action": "revoke_keys", "_selected_action": [key.pk]}, follow=True
    )
    assert "1 key(s) were already revoked" in response.content.decode()
    assert ApiKey.objects.get(pk=key.pk).revoked == long_ago


def test_key_list_filters_by_state(admin_client: Client, desktop: ClientApp) -> None:
    active, _ = issue_key(desktop)
    revoked, _ = issue_key(desktop)
    expired, _ = issue_key(desktop, expires=timezone.now() - timedelta(minutes=1))
    ApiKey.objects.filter(pk=revoked.pk).update(revoked=timezone.now())
    for state, key in (("active", active), ("revoked", revoked), ("expired", expired)):
        html = admin_client.get(f"{KEYS_URL}?state={state}").content.decode()
        shown = {k.key_id for k in (active, revoked, expired) if k.key_id in html}
        assert shown == {key.key_id}, state


def test_client_admin_edits_scopes_as_labels(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:servicewire_clientapp_add"),
        {
            "name": "desktop",
            "is_active": "on",
            "scopes": "science, billing.read science",
            "notes": "",
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302
    client_app = ClientApp.objects.get(name="desktop")
    assert client_app.scopes == ["science", "billing.read"]
    page = admin_client.get(
        reverse("admin:servicewire_clientapp_change", args=[client_app.pk])
    ).content.decode()
    assert 'value="billing.read, science"' in page


def test_client_admin_refuses_malformed_scopes(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:servicewire_clientapp_add"),
        {
            "name": "desktop",
            "scopes": "Science",
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "Invalid scope Science" in response.content.decode()
    assert not ClientApp.objects.exists()


def test_client_list_counts_keys(admin_client: Client, desktop: ClientApp) -> None:
    issue_key(desktop)
    issue_key(desktop)
    html = admin_client.get(reverse("admin:servicewire_clientapp_changelist")).content.decode()
    assert re.search(r'<td class="field-key_count">2</td>', html)
    assert "science" in html


def test_client_page_lists_its_keys_read_only(admin_client: Client, desktop: ClientApp) -> None:
    key, _ = issue_key(desktop)
    html = admin_client.get(
        reverse("admin:servicewire_clientapp_change", args=[desktop.pk])
    ).content.decode()
    assert key.key_id in html
    assert 'name="keys-0-expires' not in html
