"""The admin in a real browser: headless Chromium driven by Playwright.

An administrator creates a client, issues a key, copies it from the page, and
the key works for a real call; afterwards no admin page shows it again.
Skipped with the reason shown where Chromium or Playwright is missing
(mandatory under CI, whose script installs both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from servicewire import Client
from tests.browser import needs_browser

pytestmark = [pytest.mark.django_db(transaction=True), needs_browser]

PASSWORD = "a-long-test-password-1"


@pytest.fixture
def browser_page(browser_context: Any) -> Any:
    return browser_context.new_page()


def test_admin_issues_a_key_shown_once_that_works(
    live_server: Any, browser_page: Any, tmp_path: Path
) -> None:
    from django.contrib.auth.models import User

    from servicewire.models import ApiKey

    User.objects.create_superuser("admin", "admin@example.org", PASSWORD)
    page = browser_page
    base = live_server.url

    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")

    page.goto(f"{base}/admin/servicewire/clientapp/add/")
    page.fill("#id_name", "desktop-tool")
    page.fill("#id_scopes", "science")
    page.click("input[name=_save]")
    page.wait_for_url(f"{base}/admin/servicewire/clientapp/")
    assert "desktop-tool" in page.content()

    page.goto(f"{base}/admin/servicewire/apikey/add/")
    page.select_option("#id_client", label="desktop-tool")
    page.click("input[name=_save]")
    plain = page.input_value("#id_plain_key")
    assert plain.startswith("sw_")
    page.screenshot(path=str(tmp_path / "key-issued.png"), full_page=True)

    with Client(f"{base}/services/", plain) as sw:
        assert sw.add(a=20, b=22) == 42

    key = ApiKey.objects.get()
    secret = plain.rsplit("_", 1)[1]
    for path in (
        "/admin/servicewire/apikey/",
        f"/admin/servicewire/apikey/{key.pk}/change/",
        f"/admin/servicewire/clientapp/{key.client.pk}/change/",
    ):
        page.goto(base + path)
        html = page.content()
        assert key.key_id in html
        assert secret not in html and key.secret_hash not in html

    # Revoking from the list's action stops the key on the next call.
    page.goto(f"{base}/admin/servicewire/apikey/")
    page.check(f"input[name=_selected_action][value='{key.pk}']")
    page.select_option("select[name=action]", "revoke_keys")
    page.click("button[name=index]")
    page.wait_for_selector("text=Revoked 1 key")
    from servicewire.errors import Unauthorized

    with Client(f"{base}/services/", plain) as sw, pytest.raises(Unauthorized):
        sw.add(a=1, b=1)
