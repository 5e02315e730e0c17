"""``manage.py servicewire``: clients and the whole life of a key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import RequestFactory
from django.utils import timezone

from servicewire.models import ApiKey, ClientApp
from tests.conftest import authenticate

pytestmark = pytest.mark.django_db

KEY_FORMAT = re.compile(r"sw_[A-Za-z0-9]{12}_[A-Za-z0-9]{43}")
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    """Run the command in process and return what it printed."""
    out = StringIO()
    call_command("servicewire", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def new_key(name: str, *extra: str) -> str:
    """Create a key through the command: its plain text is the last line."""
    return run("key", "create", name, *extra).splitlines()[-1]


def calls_with(plain: str) -> bool:
    request = RequestFactory().post("/services/add", headers={"Authorization": f"Bearer {plain}"})
    return authenticate(request) is not None


def test_client_add_creates_a_client_with_scopes() -> None:
    output = run("client", "add", "desktop", "--scope", "science", "--scope", "billing.read")
    client = ClientApp.objects.get(name="desktop")
    assert client.scopes == ["science", "billing.read"]
    assert client.is_active
    assert "desktop" in output


def test_client_add_refuses_a_duplicate_name() -> None:
    run("client", "add", "desktop")
    with pytest.raises(CommandError, match="already exists"):
        run("client", "add", "desktop")
    assert ClientApp.objects.count() == 1


@pytest.mark.parametrize("label", ["", "Science", "has space", "a/b", "é"])
def test_client_add_refuses_malformed_scopes(label: str) -> None:
    with pytest.raises(CommandError, match="Invalid scope"):
        run("client", "add", "desktop", "--scope", label)
    assert not ClientApp.objects.exists()


def test_client_add_refuses_an_empty_name() -> None:
    with pytest.raises(CommandError, match="must not be empty"):
        run("client", "add", "  ")


def test_client_list_shows_state_scopes_and_key_count() -> None:
    run("client", "add", "desktop", "--scope", "science")
    run("client", "add", "script")
    new_key("desktop")
    new_key("desktop")
    lines = run("client", "list").splitlines()
    assert lines[0].split() == ["NAME", "ACTIVE", "SCOPES", "KEYS"]
    assert lines[1].split() == ["desktop", "yes", "science", "2"]
    assert lines[2].split() == ["script", "yes", "-", "0"]


def test_key_lifecycle_create_use_list_revoke() -> None:
    run("client", "add", "desktop")

    output = run("key", "create", "desktop")
    *explanation, plain = output.splitlines()
    assert KEY_FORMAT.fullmatch(plain)
    key_id = plain.split("_")[1]
    assert any("shown once" in line and key_id in line for line in explanation)
    assert calls_with(plain)

    listing = run("key", "list")
    assert key_id in listing
    assert "active" in listing

    revoked = run("key", "revoke", key_id)
    assert f"Revoked key {key_id}" in revoked
    assert ApiKey.objects.get(key_id=key_id).revoked is not None
    # Every call reads the key from the database: the very next one is refused.
    assert not calls_with(plain)
    assert "revoked" in run("key", "list")


def test_key_is_printed_only_at_creation() -> None:
    run("client", "add", "desktop")
    plain = new_key("desktop")
    secret = plain.rsplit("_", 1)[1]
    key = ApiKey.objects.get()
    for args in (("key", "list"), ("client", "list"), ("key", "revoke", key.key_id)):
        output = run(*args)
        assert secret not in output
        assert key.secret_hash not in output


def test_key_list_is_an_aligned_table() -> None:
    run("client", "add", "desktop")
    run("client", "add", "a-client-with-a-long-name")
    new_key("desktop", "--expires-in", "90d")
    new_key("a-client-with-a-long-name")
    header, *rows = run("key", "list").splitlines()
    headings = ["KEY ID", "CLIENT", "CREATED", "EXPIRES", "LAST USED", "STATE"]
    starts = [header.index(heading) for heading in headings]
    assert starts == sorted(starts)
    assert len(rows) == 2
    for row in rows:
        # Every cell begins exactly under its heading.
        for start in starts[1:]:
            assert row[start - 2 : start] == "  "
            assert row[start] != " "


def test_key_list_says_when_there_are_none() -> None:
    assert run("key", "list").strip() == "No API keys."


def test_expires_in_sets_the_expiry_and_expired_keys_are_refused() -> None:
    run("client", "add", "desktop")
    before = timezone.now()
    plain = new_key("desktop", "--expires-in", "12h")
    key = ApiKey.objects.get()
    assert key.expires is not None
    assert before + timedelta(hours=12) <= key.expires <= timezone.now() + timedelta(hours=12)
    assert calls_with(plain)

    ApiKey.objects.filter(pk=key.pk).update(expires=timezone.now() - timedelta(seconds=1))
    assert not calls_with(plain)
    assert "expired" in run("key", "list")


def test_key_without_expires_in_never_expires() -> None:
    run("client", "add", "desktop")
    output = run("key", "create", "desktop")
    assert ApiKey.objects.get().expires is None
    assert "never expires" in output


@pytest.mark.parametrize("duration", ["3w", "90", "soon", "-1d", "0s"])
def test_bad_duration_is_refused_and_creates_nothing(duration: str) -> None:
    run("client", "add", "desktop")
    with pytest.raises(CommandError, match="--expires-in"):
        run("key", "create", "desktop", "--expires-in", duration)
    assert not ApiKey.objects.exists()


def test_key_for_unknown_client_is_refused() -> None:
    with pytest.raises(CommandError, match="No client named 'ghost'"):
        run("key", "create", "ghost")


def test_revoke_unknown_key_id_is_an_error() -> None:
    with pytest.raises(CommandError, match="No API key with id 'AAAAAAAAAAAA'"):
        run("key", "revoke", "AAAAAAAAAAAA")


def test_revoke_malformed_key_id_is_an_error() -> None:
    with pytest.raises(CommandError, match="Not a key id"):
        run("key", "revoke", "nope")


def test_revoke_twice_says_so_and_keeps_the_first_date() -> None:
    run("client", "add", "desktop")
    key_id = new_key("desktop").split("_")[1]
    run("key", "revoke", key_id)
    first = ApiKey.objects.get().revoked
    output = run("key", "revoke", key_id)
    assert "already revoked" in output
    assert ApiKey.objects.get().revoked == first


def test_revoke_accepts_a_whole_leaked_key_and_never_echoes_its_secret() -> None:
    run("client", "add", "desktop")
    plain = new_key("desktop")
    output = run("key", "revoke", plain)
    assert ApiKey.objects.get().revoked is not None
    assert plain.rsplit("_", 1)[1] not in output


def test_missing_sub_command_is_an_error() -> None:
    with pytest.raises(CommandError):
        run("key")


def manage(*args: str, site: Path) -> subprocess.CompletedProcess[str]:
    """``python -m django ... --settings site_settings`` in a fresh process.

    ``site_settings`` is the test site on a database of its own in ``site``,
    so the run neither sees nor changes any other database.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env.pop("SERVICEWIRE_TEST_DATABASE", None)
    return subprocess.run(
        [sys.executable, "-m", "django", *args, "--settings", "site_settings"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_real_process_prints_the_key_alone_on_the_last_line(tmp_path: Path) -> None:
    database = tmp_path / "site.sqlite3"
    (tmp_path / "site_settings.py").write_text(
        "from tests.settings import *  # noqa: F403\n"
        f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.sqlite3', "
        f"'NAME': {str(database)!r}}}}}\n"
    )
    migrated = manage("migrate", "-v", "0", site=tmp_path)
    assert migrated.returncode == 0, migrated.stderr

    added = manage("servicewire", "client", "add", "desktop", site=tmp_path)
    assert added.returncode == 0, added.stderr

    created = manage(
        "servicewire", "key", "create", "desktop", "--expires-in", "90d", site=tmp_path
    )
    assert created.returncode == 0, created.stderr
    *explanation, plain = created.stdout.splitlines()
    assert KEY_FORMAT.fullmatch(plain)
    assert explanation, "the human explanation comes before the key"
    assert plain not in created.stderr

    listed = manage("servicewire", "key", "list", site=tmp_path)
    assert plain.split("_")[1] in listed.stdout
    assert plain.rsplit("_", 1)[1] not in listed.stdout + listed.stderr

    missing = manage("servicewire", "key", "create", "ghost", site=tmp_path)
    assert missing.returncode == 1
    assert "No client named 'ghost'" in missing.stderr
    assert missing.stdout == ""
