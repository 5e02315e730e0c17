"""Browser calls by a logged-in site user: session cookie plus CSRF token.

The real thing first: headless Chromium (Playwright) opens a page of the
test site that calls a service with ``fetch``. Then the attacks over HTTP
against ``live_server``: no CSRF token, a wrong one, a logged-out session,
a session next to a bad key, a user with no client. The audit rows say
``session`` and hold no session id or CSRF token.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client as DjangoClient
from django.test import override_settings

from servicewire.models import AuditEntry, ClientApp
from servicewire.tokens import TOKEN_PREFIX
from tests.browser import needs_browser

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def linked_user(db: None) -> User:
    """A site user whose browser calls count as the client ``carol-app``."""
    user = User.objects.create_user("carol", "carol@example.org", "a-long-password-3")
    ClientApp.objects.create(name="carol-app", user=user)
    return user


def _session_cookies(user: User) -> dict[str, str]:
    """A real login session and CSRF cookie for ``user``, as a browser holds them."""
    django_client = DjangoClient()
    django_client.force_login(user)
    django_client.get("/page/call/")
    return {
        settings.SESSION_COOKIE_NAME: django_client.cookies[settings.SESSION_COOKIE_NAME].value,
        settings.CSRF_COOKIE_NAME: django_client.cookies[settings.CSRF_COOKIE_NAME].value,
    }


def _assert_no_cookie_in_audit(cookies: dict[str, str]) -> None:
    for row in AuditEntry.objects.all():
        for value in (row.request_id, row.user_agent, row.key_id, row.error_type, row.service):
            for secret in cookies.values():
                assert secret not in value


@needs_browser
def test_a_page_calls_a_service_as_its_logged_in_user(
    live_server: Any, browser_context: Any, linked_user: User
) -> None:
    cookies = _session_cookies(linked_user)
    browser_context.add_cookies(
        [{"name": name, "value": value, "url": live_server.url} for name, value in cookies.items()]
    )
    page = browser_context.new_page()
    page.goto(f"{live_server.url}/page/call/")
    page.wait_for_function("document.getElementById('sum').textContent === '42'")

    without = page.evaluate("callService('add', {a: 1, b: 2}, null)")
    assert without["status"] == 403
    assert without["body"]["error"]["type"] == "Forbidden"
    assert "CSRF" in without["body"]["error"]["message"]
    wrong = page.evaluate("callService('add', {a: 1, b: 2}, 'x'.repeat(32))")
    assert wrong["status"] == 403
    good = page.evaluate("callService('add', {a: 1, b: 2})")
    assert good == {"status": 200, "body": 3}

    rows = list(AuditEntry.objects.order_by("time").values_list("credential", "status"))
    assert rows == [("session", 200), ("", 403), ("", 403), ("session", 200)]
    assert set(AuditEntry.objects.values_list("client_name", flat=True)) == {"carol-app", ""}
    _assert_no_cookie_in_audit(cookies)

    # Another browser, not logged in: the same page gets 401.
    stranger = browser_context.browser.new_context().new_page()
    stranger.goto(f"{live_server.url}/page/call/")
    stranger.wait_for_function("document.getElementById('sum').textContent === 'error 401'")


def _call(
    live_server: Any,
    cookies: dict[str, str],
    *,
    csrf: str | None,
    path: str = "add",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = {"Content-Type": "application/json", "X-Request-ID": uuid.uuid4().hex}
    if csrf is not None:
        sent["X-CSRFToken"] = csrf
    sent.update(headers or {})
    with httpx.Client(cookies=cookies, timeout=10) as http:
        return http.post(
            f"{live_server.url}/services/{path}", content=b'{"a": 20, "b": 22}', headers=sent
        )


def test_session_calls_without_a_valid_csrf_token_are_forbidden(
    live_server: Any, linked_user: User
) -> None:
    cookies = _session_cookies(linked_user)
    csrf = cookies[settings.CSRF_COOKIE_NAME]
    assert _call(live_server, cookies, csrf=csrf).json() == 42
    for attempt in (None, "", "x" * 64, csrf[:-1] + ("a" if csrf[-1] != "a" else "b")):
        refused = _call(live_server, cookies, csrf=attempt)
        assert refused.status_code == 403, attempt
        assert refused.json()["error"]["type"] == "Forbidden"
    # The token without its cookie proves nothing either.
    alone = {settings.SESSION_COOKIE_NAME: cookies[settings.SESSION_COOKIE_NAME]}
    assert _call(live_server, alone, csrf=csrf).status_code == 403
    statuses = list(AuditEntry.objects.values_list("status", flat=True))
    assert sorted(statuses) == [200] + [403] * 5
    _assert_no_cookie_in_audit(cookies)


def test_django_test_client_enforcing_csrf_gets_403(linked_user: User) -> None:
    browser = DjangoClient(enforce_csrf_checks=True)
    browser.force_login(linked_user)
    browser.get("/page/call/")
    csrf = browser.cookies[settings.CSRF_COOKIE_NAME].value
    body = {"a": 1, "b": 2}
    missing = browser.post("/services/add", body, content_type="application/json")
    wrong = browser.post(
        "/services/add", body, content_type="application/json", headers={"X-CSRFToken": "y" * 32}
    )
    good = browser.post(
        "/services/add", body, content_type="application/json", headers={"X-CSRFToken": csrf}
    )
    assert (missing.status_code, wrong.status_code, good.status_code) == (403, 403, 200)
    assert missing.json()["error"]["type"] == "Forbidden"
    assert good.json() == 3


def test_session_refusals(live_server: Any, linked_user: User) -> None:
    cookies = _session_cookies(linked_user)
    csrf = cookies[settings.CSRF_COOKIE_NAME]
    # An Authorization header is the credential, whatever else comes along.
    bad_key = _call(live_server, cookies, csrf=csrf, headers={"Authorization": "Bearer nonsense"})
    assert bad_key.status_code == 401
    basic = _call(live_server, cookies, csrf=csrf, headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert basic.status_code == 401

    ClientApp.objects.filter(name="carol-app").update(is_active=False)
    assert _call(live_server, cookies, csrf=csrf).status_code == 403
    ClientApp.objects.filter(name="carol-app").update(user=None, is_active=True)
    unlinked = _call(live_server, cookies, csrf=csrf)
    assert unlinked.status_code == 403 and "linked" in unlinked.json()["error"]["message"]
    ClientApp.objects.filter(name="carol-app").update(user=linked_user)

    User.objects.filter(pk=linked_user.pk).update(is_active=False)
    assert _call(live_server, cookies, csrf=csrf).status_code == 401
    User.objects.filter(pk=linked_user.pk).update(is_active=True)
    assert _call(live_server, cookies, csrf=csrf).status_code == 200

    # Logging out ends the session's calls.
    from django.contrib.sessions.models import Session

    Session.objects.all().delete()
    assert _call(live_server, cookies, csrf=csrf).status_code == 401


def test_discovery_is_a_safe_read_without_csrf(live_server: Any, linked_user: User) -> None:
    cookies = _session_cookies(linked_user)
    with httpx.Client(cookies=cookies, timeout=10) as http:
        listing = http.get(f"{live_server.url}/services/")
    assert listing.status_code == 200
    names = {s["name"] for s in listing.json()["services"]}
    assert "add" in names and "science.spectrum" not in names


def test_a_session_buys_a_token_bound_to_its_user(live_server: Any, linked_user: User) -> None:
    cookies = _session_cookies(linked_user)
    csrf = cookies[settings.CSRF_COOKIE_NAME]
    refused = _call(live_server, cookies, csrf=None, path="_auth/token")
    assert refused.status_code == 403
    with httpx.Client(cookies=cookies, timeout=10) as http:
        answer = http.post(
            f"{live_server.url}/services/_auth/token", headers={"X-CSRFToken": csrf}
        ).json()
        assert answer["token"].startswith(TOKEN_PREFIX)
    with httpx.Client(timeout=10) as http:
        call = http.post(
            f"{live_server.url}/services/add",
            json={"a": 2, "b": 3},
            headers={"Authorization": f"Bearer {answer['token']}"},
        )
    assert call.json() == 5
    row = AuditEntry.objects.get(service="add")
    assert (row.credential, row.client_name) == ("token", "carol-app")


def test_session_is_refused_over_plain_http_where_https_is_required(
    live_server: Any, linked_user: User
) -> None:
    cookies = _session_cookies(linked_user)
    with override_settings(SERVICEWIRE={"REQUIRE_HTTPS": True}):
        refused = _call(live_server, cookies, csrf=cookies[settings.CSRF_COOKIE_NAME])
    assert refused.status_code == 403
    assert "HTTPS" in refused.json()["error"]["message"]


def test_an_administrator_links_a_user_in_the_admin(live_server: Any, admin_client: Any) -> None:
    user = User.objects.create_user("heidi", "heidi@example.org", "a-long-password-5")
    cookies = _session_cookies(user)
    csrf = cookies[settings.CSRF_COOKIE_NAME]
    assert _call(live_server, cookies, csrf=csrf).status_code == 403
    response = admin_client.post(
        "/admin/servicewire/clientapp/add/",
        {
            "name": "heidi-app",
            "is_active": "on",
            "scopes": "",
            "rate": "",
            "user": str(user.pk),
            "notes": "",
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302
    assert ClientApp.objects.get(name="heidi-app").user == user
    assert _call(live_server, cookies, csrf=csrf).json() == 42
