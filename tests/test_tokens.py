"""Tokens: log in once at ``_auth/token``, then call with a short-lived credential.

Every attack here crosses a real socket to pytest-django's ``live_server``
(a thread of this process, so ``override_settings`` reaches it) and checks
the audit rows it leaves, and that no token, key or password is in them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import msgpack
import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from django.utils import timezone

from servicewire import AsyncClient, Client
from servicewire.credentials import BearerAuth, TokenAuth
from servicewire.errors import Forbidden, Unauthorized
from servicewire.models import ApiKey, AuditEntry, ClientApp
from servicewire.tokens import TOKEN_PREFIX
from tests.test_throttle import fresh_window

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple 7"
_SETTINGS = {"REQUIRE_HTTPS": False}


def _site(**values: Any) -> Any:
    """override_settings for SERVICEWIRE, keeping the test site's own values."""
    return override_settings(SERVICEWIRE={**_SETTINGS, **values})


@pytest.fixture
def mount(live_server: Any) -> str:
    return f"{live_server.url}/services/"


def _post(
    url: str,
    *,
    credential: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response, str]:
    """POST a JSON body; returns the response and the request id sent."""
    request_id = uuid.uuid4().hex
    sent = {"X-Request-ID": request_id, **(headers or {})}
    if credential is not None:
        sent["Authorization"] = f"Bearer {credential}"
    content = b"" if body is None else json.dumps(body).encode()
    if content:
        sent.setdefault("Content-Type", "application/json")
    return httpx.post(url, content=content, headers=sent, timeout=10), request_id


def _login(mount: str, key: str, body: Any = None) -> str:
    response, _ = _post(mount + "_auth/token", credential=key, body=body)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def _add(mount: str, token: str) -> httpx.Response:
    return _post(mount + "add", credential=token, body={"a": 20, "b": 22})[0]


def _row(request_id: str) -> AuditEntry:
    return AuditEntry.objects.get(request_id=request_id)


def _assert_no_secret_in_audit(*secrets: str) -> None:
    """No field of any audit row holds any of ``secrets`` or a token."""
    for row in AuditEntry.objects.all():
        for field in row._meta.get_fields():
            value = str(getattr(row, field.name, "") or "") if field.concrete else ""
            assert TOKEN_PREFIX not in value, (field.name, value)
            for secret in secrets:
                assert secret not in value, field.name


def _key_id(plain: str) -> str:
    return plain.split("_")[1]


def _payload(token: str) -> dict[str, Any]:
    encoded = token[len(TOKEN_PREFIX) :].split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(encoded + "=="))
    return decoded


def test_a_key_buys_a_token_that_calls_services(mount: str, make_key: Callable[..., str]) -> None:
    key = make_key("desktop")
    response, login_id = _post(mount + "_auth/token", credential=key)
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"token", "expires_in"}
    assert answer["expires_in"] == 900
    token = answer["token"]
    assert token.startswith(TOKEN_PREFIX)
    # The payload is readable by anyone: it must hold no secret.
    payload = _payload(token)
    assert payload["k"] == _key_id(key)
    assert key.rsplit("_", 1)[1] not in token

    call, call_id = _post(mount + "add", credential=token, body={"a": 20, "b": 22})
    assert call.status_code == 200 and call.json() == 42
    login_row, call_row = _row(login_id), _row(call_id)
    assert (login_row.credential, login_row.service) == ("key", "_auth/token")
    assert (call_row.credential, call_row.key_id, call_row.client_name) == (
        "token",
        _key_id(key),
        "desktop",
    )
    _assert_no_secret_in_audit(key, token)


def test_token_endpoint_answers_in_the_negotiated_codec(
    mount: str, make_key: Callable[..., str]
) -> None:
    response = httpx.post(
        mount + "_auth/token",
        headers={"Authorization": f"Bearer {make_key()}", "Accept": "application/msgpack"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/msgpack")
    answer = msgpack.unpackb(response.content)
    assert answer["token"].startswith(TOKEN_PREFIX)
    assert _add(mount, answer["token"]).json() == 42


def test_token_stops_the_moment_its_key_is_revoked(
    mount: str, make_key: Callable[..., str]
) -> None:
    key = make_key()
    token = _login(mount, key)
    assert _add(mount, token).status_code == 200
    ApiKey.objects.filter(key_id=_key_id(key)).update(revoked=timezone.now())
    refused, request_id = _post(mount + "add", credential=token, body={"a": 1, "b": 1})
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    row = _row(request_id)
    assert (row.status, row.error_type, row.key_id) == (401, "Unauthorized", "")
    _assert_no_secret_in_audit(key, token)


def test_token_stops_when_its_key_expires(mount: str, make_key: Callable[..., str]) -> None:
    key = make_key()
    # A key with 100 s left gets a token for 100 s, not the full lifetime.
    ApiKey.objects.filter(key_id=_key_id(key)).update(
        expires=timezone.now() + timedelta(seconds=100)
    )
    response, _ = _post(mount + "_auth/token", credential=key)
    assert 98 <= response.json()["expires_in"] <= 100
    token = response.json()["token"]
    assert _add(mount, token).status_code == 200
    ApiKey.objects.filter(key_id=_key_id(key)).update(expires=timezone.now() - timedelta(seconds=1))
    assert _add(mount, token).status_code == 401


def test_token_stops_while_its_client_is_disabled(mount: str, make_key: Callable[..., str]) -> None:
    key = make_key("laptop")
    token = _login(mount, key)
    ClientApp.objects.filter(name="laptop").update(is_active=False)
    assert _add(mount, token).status_code == 401
    ClientApp.objects.filter(name="laptop").update(is_active=True)
    assert _add(mount, token).status_code == 200


def test_expired_token_is_refused_with_its_reason(mount: str, make_key: Callable[..., str]) -> None:
    with _site(TOKEN_LIFETIME=1):
        response, _ = _post(mount + "_auth/token", credential=make_key())
        assert response.json()["expires_in"] == 1
        token = response.json()["token"]
        assert _add(mount, token).status_code == 200
        time.sleep(1.1)
        refused, request_id = _post(mount + "add", credential=token, body={"a": 1, "b": 1})
    assert refused.status_code == 401
    assert "expired" in refused.json()["error"]["message"]
    assert _row(request_id).status == 401


def _flip(text: str, index: int) -> str:
    char = text[index]
    return text[:index] + ("A" if char != "A" else "B") + text[index + 1 :]


def test_tampered_garbage_and_foreign_tokens_are_refused(
    mount: str, make_key: Callable[..., str]
) -> None:
    token = _login(mount, make_key())
    payload_end = token.rindex(".")
    # Raise the expiry or swap the key id in the payload, or touch the signature.
    forged_claims = {**_payload(token), "e": 2**52}
    forged = (
        TOKEN_PREFIX
        + base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).decode().rstrip("=")
        + token[payload_end:]
    )
    with override_settings(SECRET_KEY="another-site-entirely"):
        foreign = _login(mount, make_key())
    attempts = [
        _flip(token, len(TOKEN_PREFIX) + 3),
        _flip(token, payload_end + 5),
        token[:-1],
        forged,
        foreign,
        TOKEN_PREFIX,
        TOKEN_PREFIX + "garbage",
        TOKEN_PREFIX + "a.b.c.d",
        TOKEN_PREFIX + "x" * 5000,
    ]
    for attempt in attempts:
        refused, request_id = _post(mount + "add", credential=attempt, body={"a": 1, "b": 1})
        assert refused.status_code == 401, attempt
        message = refused.json()["error"]["message"]
        assert "altered" in message or "malformed" in message
        assert len(attempt) <= 12 or attempt[-12:] not in message
        assert _row(request_id).error_type == "Unauthorized"
    _assert_no_secret_in_audit(token, forged)


def test_token_carries_no_more_scopes_than_asked_or_held(
    mount: str, make_key: Callable[..., str]
) -> None:
    key = make_key("lab", scopes=["science", "billing"])
    arrays = {"samples": [1.0, 2.0]}
    science = _login(mount, key, {"scopes": ["science"]})
    billing = _login(mount, key, {"scopes": ["billing"]})
    assert _post(mount + "science.spectrum", credential=science, body=arrays)[0].status_code == 200
    refused, request_id = _post(mount + "science.spectrum", credential=billing, body=arrays)
    assert refused.status_code == 403
    assert _row(request_id).credential == "token"

    # More than the client holds: refused, and no token is issued.
    greedy, request_id = _post(
        mount + "_auth/token", credential=key, body={"scopes": ["science", "admin"]}
    )
    assert greedy.status_code == 403
    assert "'admin'" in greedy.json()["error"]["message"]
    assert "token" not in greedy.json()
    assert _row(request_id).status == 403

    # A scope the client loses is lost by its tokens at once.
    ClientApp.objects.filter(name="lab").update(scopes=["billing"])
    assert _post(mount + "science.spectrum", credential=science, body=arrays)[0].status_code == 403


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"scopes": "science"}, 422),
        ({"scopes": [1, 2]}, 422),
        ({"scope": ["science"]}, 422),
        ([1, 2], 400),
    ],
)
def test_malformed_token_requests_get_clear_errors(
    mount: str, make_key: Callable[..., str], body: Any, status: int
) -> None:
    response, _ = _post(mount + "_auth/token", credential=make_key(scopes=["science"]), body=body)
    assert response.status_code == status
    assert "token" not in response.json()


def test_a_token_cannot_buy_another_token(mount: str, make_key: Callable[..., str]) -> None:
    token = _login(mount, make_key())
    refused, request_id = _post(mount + "_auth/token", credential=token)
    assert refused.status_code == 403
    assert "cannot be traded" in refused.json()["error"]["message"]
    row = _row(request_id)
    assert (row.credential, row.status) == ("token", 403)
    _assert_no_secret_in_audit(token)


def test_token_lifetime_zero_turns_tokens_off(mount: str, make_key: Callable[..., str]) -> None:
    with _site(TOKEN_LIFETIME=0):
        refused, _ = _post(mount + "_auth/token", credential=make_key())
    assert refused.status_code == 403


# -- Password login --------------------------------------------------------


@pytest.fixture
def site_user(db: None) -> User:
    """A site user linked to the client application ``alice-app``."""
    user = User.objects.create_user("alice", "alice@example.org", PASSWORD)
    ClientApp.objects.create(name="alice-app", user=user)
    return user


def _password_login(mount: str, username: str, password: str) -> tuple[httpx.Response, str]:
    return _post(mount + "_auth/token", body={"username": username, "password": password})


def test_password_login_yields_a_token_bound_to_the_user(mount: str, site_user: User) -> None:
    with _site(ALLOW_PASSWORD_LOGIN=True):
        response, login_id = _password_login(mount, "alice", PASSWORD)
        assert response.status_code == 200, response.text
        token = response.json()["token"]
        assert _payload(token)["u"] == site_user.pk and _payload(token)["k"] == ""
        call, call_id = _post(mount + "add", credential=token, body={"a": 20, "b": 22})
        assert call.json() == 42

        login_row, call_row = _row(login_id), _row(call_id)
        assert (login_row.credential, login_row.client_name) == ("password", "alice-app")
        assert (call_row.credential, call_row.client_name) == ("token", "alice-app")

        # A new password ends the user's tokens; so does deactivation.
        site_user.set_password(PASSWORD + "!")
        site_user.save()
        assert _add(mount, token).status_code == 401
        token = _password_login(mount, "alice", PASSWORD + "!")[0].json()["token"]
        assert _add(mount, token).status_code == 200
        User.objects.filter(pk=site_user.pk).update(is_active=False)
        refused = _add(mount, token)
    assert refused.status_code == 401
    _assert_no_secret_in_audit(PASSWORD, token)


def test_password_login_accepts_msgpack(mount: str, site_user: User) -> None:
    with _site(ALLOW_PASSWORD_LOGIN=True):
        response = httpx.post(
            mount + "_auth/token",
            content=msgpack.packb({"username": "alice", "password": PASSWORD}),
            headers={"Content-Type": "application/msgpack"},
            timeout=10,
        )
    assert response.status_code == 200
    assert msgpack.unpackb(response.content)["token"].startswith(TOKEN_PREFIX)


def test_password_login_is_off_unless_the_site_allows_it(mount: str, site_user: User) -> None:
    response, _ = _password_login(mount, "alice", PASSWORD)
    assert response.status_code == 401
    assert "token" not in response.json()


def test_password_login_refusals(mount: str, site_user: User, caplog: Any) -> None:
    User.objects.create_user("bob", "bob@example.org", PASSWORD)  # no client linked
    with _site(ALLOW_PASSWORD_LOGIN=True):
        wrong, wrong_id = _password_login(mount, "alice", "not-the-password")
        unknown, _ = _password_login(mount, "nobody", PASSWORD)
        unlinked, unlinked_id = _password_login(mount, "bob", PASSWORD)
        missing, _ = _post(mount + "_auth/token", body={"username": "alice"})
        ClientApp.objects.filter(name="alice-app").update(is_active=False)
        disabled, _ = _password_login(mount, "alice", PASSWORD)
        with _site(ALLOW_PASSWORD_LOGIN=True, REQUIRE_HTTPS=True):
            plain_http, _ = _password_login(mount, "alice", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]
    assert _row(wrong_id).error_type == "Unauthorized"
    assert unlinked.status_code == 403 and "linked" in unlinked.json()["error"]["message"]
    assert _row(unlinked_id).status == 403
    assert missing.status_code == 422
    assert disabled.status_code == 403
    assert plain_http.status_code == 403
    for response in (wrong, unknown, unlinked, missing, disabled, plain_http):
        assert PASSWORD not in response.text and "not-the-password" not in response.text
    assert PASSWORD not in caplog.text and "not-the-password" not in caplog.text
    _assert_no_secret_in_audit(PASSWORD, "not-the-password")


def test_hide_mode_hides_password_login_failures(mount: str, site_user: User) -> None:
    with _site(ALLOW_PASSWORD_LOGIN=True, HIDE_FROM_UNAUTHENTICATED=True):
        wrong, request_id = _password_login(mount, "alice", "not-the-password")
        right, _ = _password_login(mount, "alice", PASSWORD)
    assert wrong.status_code == 404 and "Unauthorized" not in wrong.text
    assert _row(request_id).error_type == "Unauthorized"
    assert right.status_code == 200


def test_password_guessing_is_rate_limited_per_address(mount: str, site_user: User) -> None:
    from django.core.cache import cache

    cache.clear()
    # Counting is in fixed windows of a minute: nine logins must fall in one.
    fresh_window(60, 15)
    with _site(ALLOW_PASSWORD_LOGIN=True, AUTH_FAILURE_RATE="5/m"):
        statuses = [_password_login(mount, "alice", f"guess-{n}")[0].status_code for n in range(8)]
        # Even the right password is turned away once the address is limited.
        right, request_id = _password_login(mount, "alice", PASSWORD)
    cache.clear()
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}
    assert right.status_code == 429 and "Retry-After" in right.headers
    assert _row(request_id).error_type == "RateLimited"


# -- The client ------------------------------------------------------------


def _logins() -> int:
    return AuditEntry.objects.filter(service="_auth/token").count()


def test_client_logs_in_once_and_sends_the_token(mount: str, make_key: Callable[..., str]) -> None:
    key = make_key("tool")
    with Client(mount, key, use_tokens=True) as sw:
        assert [sw.add(a=n, b=1) for n in range(5)] == [1, 2, 3, 4, 5]
        assert "swt" not in repr(sw) and key not in repr(sw)
    assert _logins() == 1
    calls = AuditEntry.objects.filter(service="add")
    assert {row.credential for row in calls} == {"token"}
    assert calls.count() == 5
    _assert_no_secret_in_audit(key)


def test_client_refreshes_before_expiry(mount: str, make_key: Callable[..., str]) -> None:
    with _site(TOKEN_LIFETIME=2), Client(mount, make_key(), use_tokens=True) as sw:
        assert sw.add(a=1, b=1) == 2
        time.sleep(1.9)  # inside the last tenth of the token's life
        assert sw.add(a=1, b=2) == 3
    assert _logins() == 2
    assert not AuditEntry.objects.filter(status=401).exists()


def test_client_logs_in_again_once_when_its_token_is_refused(
    mount: str, make_key: Callable[..., str]
) -> None:
    key = make_key()
    with _site(TOKEN_LIFETIME=1):
        stale = _login(mount, key)
    time.sleep(1.1)
    AuditEntry.objects.all().delete()
    with Client(mount, key, use_tokens=True) as sw:
        assert sw.add(a=1, b=1) == 2
        # The client believes its token good for minutes (a clock jump, a
        # server that changed its mind); the server says it has expired.
        auth = sw._auth
        assert isinstance(auth, TokenAuth)
        auth._current = (stale, time.monotonic() + 600)
        assert sw.add(a=2, b=2) == 4
    statuses = list(AuditEntry.objects.order_by("time").values_list("service", "status"))
    assert statuses == [
        ("_auth/token", 200),
        ("add", 200),
        ("add", 401),
        ("_auth/token", 200),
        ("add", 200),
    ]


def test_client_with_a_revoked_key_gets_the_login_refusal(
    mount: str, make_key: Callable[..., str]
) -> None:
    key = make_key()
    with Client(mount, key, use_tokens=True) as sw:
        assert sw.add(a=1, b=1) == 2
        ApiKey.objects.update(revoked=timezone.now())
        with pytest.raises(Unauthorized) as refused:
            sw.add(a=1, b=1)
    assert "invalid, expired or revoked" in refused.value.message
    assert key not in str(refused.value)
    # One retry at most: the refused call, the refused login, nothing more.
    assert list(AuditEntry.objects.order_by("time").values_list("status", flat=True))[-2:] == [
        401,
        401,
    ]


def test_async_client_uses_tokens(mount: str, make_key: Callable[..., str]) -> None:
    key = make_key()

    async def calls() -> list[int]:
        async with AsyncClient(mount, key, use_tokens=True) as sw:
            return [await sw.add(a=n, b=n) for n in range(3)]

    with _site(TOKEN_LIFETIME=60):
        assert asyncio.run(calls()) == [0, 2, 4]
    assert _logins() == 1


def test_client_login_refused_is_not_retried(mount: str, make_key: Callable[..., str]) -> None:
    """A refused login is not retried: the caller gets the server's error."""
    auth = TokenAuth(BearerAuth(make_key()), mount + "_auth/token", scopes=["admin"])
    with httpx.Client(auth=auth, timeout=10) as http:
        for _ in range(2):
            assert http.post(mount + "add", json={"a": 1, "b": 1}).status_code == 403
    assert _logins() == 2 and not AuditEntry.objects.filter(service="add").exists()


def test_client_sees_the_services_refusal_through_a_token(
    mount: str, make_key: Callable[..., str]
) -> None:
    with Client(mount, make_key(), use_tokens=True) as sw, pytest.raises(Forbidden):
        sw.call("science.spectrum", samples=[1.0])
    row = AuditEntry.objects.get(service="science.spectrum")
    assert (row.credential, row.status) == ("token", 403)


def test_a_signed_request_buys_a_token(mount: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from servicewire.signatures import register_public_key
    from servicewire.signing import public_key_text

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    signing_key = register_public_key(
        ClientApp.objects.create(name="signer"), public_key_text(private)
    )
    with Client(mount, key_id=signing_key.key_id, signing_key=pem, use_tokens=True) as sw:
        assert [sw.add(a=n, b=1) for n in range(3)] == [1, 2, 3]
        ApiKey.objects.filter(pk=signing_key.pk).update(revoked=timezone.now())
        with pytest.raises(Unauthorized):
            sw.add(a=1, b=1)
    rows = list(AuditEntry.objects.order_by("time").values_list("service", "credential", "status"))
    assert rows == [
        ("_auth/token", "signature", 200),
        ("add", "token", 200),
        ("add", "token", 200),
        ("add", "token", 200),
        ("add", "", 401),
        ("_auth/token", "", 401),
    ]
    assert {row.key_id for row in AuditEntry.objects.filter(status=200)} == {signing_key.key_id}
