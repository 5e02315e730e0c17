"""Services that need Django permissions: ``@service(permissions=[...])``.

A key's caller acts as the site user linked to its client (``ClientApp.user``);
a session or a user's token as that user. ``staff.report`` in the test site
needs ``auth.view_user``. Everything goes over HTTP to ``live_server``, and a
change of permission holds on the very next request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Permission, User

from servicewire import Client
from servicewire.errors import Forbidden
from servicewire.models import AuditEntry, ClientApp

pytestmark = pytest.mark.django_db(transaction=True)

SERVICE = "staff.report"


@pytest.fixture
def mount(live_server: Any) -> str:
    return f"{live_server.url}/services/"


def _view_user() -> Permission:
    return Permission.objects.get(content_type__app_label="auth", codename="view_user")


def _report(mount: str, key: str) -> httpx.Response:
    return httpx.post(
        mount + SERVICE,
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": uuid.uuid4().hex},
        timeout=10,
    )


def _visible(mount: str, key: str) -> set[str]:
    with Client(mount, key) as sw:
        return {s["name"] for s in sw.services()}


def _link(client_name: str, username: str, **flags: Any) -> User:
    user = User.objects.create_user(
        username, f"{username}@example.org", "pw-not-used-here", **flags
    )
    ClientApp.objects.filter(name=client_name).update(user=user)
    return user


def test_a_client_without_a_linked_user_holds_no_permission(
    mount: str, make_key: Callable[..., str]
) -> None:
    key = make_key("robot")
    refused = _report(mount, key)
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "Forbidden"
    assert SERVICE not in _visible(mount, key)
    row = AuditEntry.objects.get(request_id=refused.headers["X-Request-ID"])
    assert (row.status, row.error_type, row.client_name) == (403, "Forbidden", "robot")


def test_the_linked_users_permissions_decide_on_every_request(
    mount: str, make_key: Callable[..., str]
) -> None:
    key = make_key("office")
    user = _link("office", "dave")
    assert _report(mount, key).status_code == 403
    assert SERVICE not in _visible(mount, key)

    user.user_permissions.add(_view_user())
    allowed = _report(mount, key)
    assert allowed.status_code == 200 and allowed.json() == "the report"
    assert SERVICE in _visible(mount, key)

    user.user_permissions.remove(_view_user())
    assert _report(mount, key).status_code == 403
    assert SERVICE not in _visible(mount, key)


def test_a_permission_through_a_group_counts(mount: str, make_key: Callable[..., str]) -> None:
    from django.contrib.auth.models import Group

    key = make_key("group-tool")
    user = _link("group-tool", "erin")
    staff = Group.objects.create(name="staff")
    staff.permissions.add(_view_user())
    user.groups.add(staff)
    assert _report(mount, key).status_code == 200


def test_superuser_holds_every_permission_while_active(
    mount: str, make_key: Callable[..., str]
) -> None:
    key = make_key("root-tool")
    user = _link("root-tool", "root", is_superuser=True)
    assert _report(mount, key).status_code == 200
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert _report(mount, key).status_code == 403


def test_tokens_carry_the_linked_users_permissions(
    mount: str, make_key: Callable[..., str]
) -> None:
    key = make_key("token-tool")
    user = _link("token-tool", "frank")
    with Client(mount, key, use_tokens=True) as sw:
        with pytest.raises(Forbidden):
            sw.call(SERVICE)
        user.user_permissions.add(_view_user())
        assert sw.call(SERVICE) == "the report"
    credentials = set(
        AuditEntry.objects.filter(service=SERVICE).values_list("credential", "status")
    )
    assert credentials == {("token", 403), ("token", 200)}


def test_a_session_user_needs_the_permission_too(live_server: Any) -> None:
    from django.conf import settings
    from django.test import Client as DjangoClient

    user = User.objects.create_user("grace", "grace@example.org", "a-long-password-4")
    ClientApp.objects.create(name="grace-app", user=user)
    browser = DjangoClient()
    browser.force_login(user)
    browser.get("/page/call/")
    cookies = {name: morsel.value for name, morsel in browser.cookies.items()}
    headers = {"X-CSRFToken": cookies[settings.CSRF_COOKIE_NAME]}
    with httpx.Client(cookies=cookies, timeout=10) as http:
        url = f"{live_server.url}/services/{SERVICE}"
        assert http.post(url, headers=headers).status_code == 403
        user.user_permissions.add(_view_user())
        assert http.post(url, headers=headers).json() == "the report"
