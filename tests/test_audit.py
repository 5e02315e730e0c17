"""The audit trail, checked over HTTP against a live server.

Every request to the mount leaves exactly one entry, whatever its fate, with
no secret in it; the entry survives a failing service, a rolled-back
transaction and a client that hangs up; the command and the admin show it.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from servicewire import audit
from servicewire.models import AuditEntry, ClientApp

pytestmark = pytest.mark.django_db(transaction=True)

JSON = {"Content-Type": "application/json"}


def assert_no_secret(*secrets: str) -> None:
    """No field of any audit entry holds any of ``secrets`` (or a key's secret part)."""
    needles = set(secrets)
    for secret in secrets:
        if secret.startswith("sw_") and secret.count("_") == 2:
            needles.add(secret.split("_")[2])
    for row in AuditEntry.objects.all():
        for field in AuditEntry._meta.concrete_fields:
            value = str(getattr(row, field.attname))
            for needle in needles:
                assert needle not in value, f"a secret in audit field {field.name}"


@pytest.fixture(autouse=True)
def empty_counters() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def sw_settings(**values: Any) -> Any:
    return override_settings(SERVICEWIRE={"REQUIRE_HTTPS": False, **values})


def post(url: str, path: str, body: bytes = b"{}", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/services/{path}", content=body, headers={**JSON, **headers}, timeout=10
    )


def only_new_entry(before: int) -> AuditEntry:
    assert AuditEntry.objects.count() == before + 1
    return AuditEntry.objects.order_by("-pk")[0]


KEY = "<key>"
WRONG = "<wrong key>"
ADD = b'{"a":1,"b":2}'

# id: (method, service, body, credential, extra headers), (status, error type), settings
CASES: dict[str, tuple[tuple[str, str, bytes, str, dict[str, str]], tuple[int, str], Any]] = {
    "200": (("POST", "add", ADD, KEY, {}), (200, ""), {}),
    "400-undecodable": (("POST", "add", b"{nope", KEY, {}), (400, "BadRequest"), {}),
    "401-wrong-key": (("POST", "add", ADD, WRONG, {}), (401, "Unauthorized"), {}),
    "401-no-credential": (("POST", "add", ADD, "", {}), (401, "Unauthorized"), {}),
    "403-scope": (("POST", "science.spectrum", b"{}", KEY, {}), (403, "Forbidden"), {}),
    "403-https": (("POST", "add", ADD, KEY, {}), (403, "Forbidden"), {"REQUIRE_HTTPS": True}),
    "404-unknown": (("POST", "no.such", b"{}", KEY, {}), (404, "NotFound"), {}),
    "404-hidden": (
        ("POST", "add", ADD, WRONG, {}),
        (404, "Unauthorized"),
        {"HIDE_FROM_UNAUTHENTICATED": True},
    ),
    "405": (("GET", "add", b"", KEY, {}), (405, "MethodNotAllowed"), {}),
    "413": (
        ("POST", "echo", b"[" + b"1," * 600 + b"1]", KEY, {}),
        (413, "PayloadTooLarge"),
        {"MAX_BODY_BYTES": 1000},
    ),
    "415": (
        ("POST", "add", b"a=1", KEY, {"Content-Type": "text/csv"}),
        (415, "UnsupportedMediaType"),
        {},
    ),
    "422": (("POST", "add", b'{"a":"x"}', KEY, {}), (422, "ValidationError"), {}),
    "409-service-error": (
        ("POST", "withdraw", b'{"account":"a","amount":"1"}', KEY, {}),
        (409, "Overdrawn"),
        {},
    ),
    "500": (("POST", "boom", b"{}", KEY, {}), (500, "InternalError"), {}),
}


@pytest.mark.parametrize("case", CASES)
def test_every_request_writes_exactly_one_entry(live_server: Any, key: str, case: str) -> None:
    (method, service, body, credential, extra), (status, error_type), settings = CASES[case]
    headers = {**JSON, **extra}
    if credential:
        sent = key if credential == KEY else key[:-3] + "xyz"
        headers["Authorization"] = f"Bearer {sent}"
    before = AuditEntry.objects.count()
    with sw_settings(**settings):
        response = httpx.request(
            method, f"{live_server.url}/services/{service}", content=body, headers=headers
        )
    assert response.status_code == status
    row = only_new_entry(before)
    assert (row.status, row.error_type) == (status, error_type)
    assert row.remote_addr == "127.0.0.1"
    assert row.user_agent.startswith("python-httpx/")
    assert row.duration_ms > 0
    # A hidden 404 is the site's own page, rendered by Django after the view.
    assert row.bytes_out == (0 if case == "404-hidden" else len(response.content))
    assert row.request_id == response.headers.get("X-Request-ID", row.request_id)
    assert abs(row.time - timezone.now()) < timedelta(seconds=30)
    authenticated = credential == KEY
    if authenticated:
        assert (row.client_name, row.key_id, row.credential) == (
            "desktop",
            key.split("_")[1],
            "key",
        )
        assert row.client == ClientApp.objects.get(name="desktop")
    else:
        assert (row.client_id, row.client_name, row.key_id) == (None, "", "")
    assert_no_secret(key)


def test_an_entry_records_service_sizes_and_the_clients_request_id(
    live_server: Any, key: str
) -> None:
    body = b'{"a": 40, "b": 2}'
    response = post(
        live_server.url,
        "add",
        body,
        Authorization=f"Bearer {key}",
        **{"X-Request-ID": "trace-1234", "User-Agent": "inventory/2.1"},
    )
    assert response.status_code == 200
    row = AuditEntry.objects.get()
    assert (row.service, row.bytes_in, row.bytes_out) == ("add", len(body), len(b"42"))
    assert (row.request_id, row.user_agent) == ("trace-1234", "inventory/2.1")


def test_discovery_openapi_and_token_requests_are_audited(live_server: Any, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{live_server.url}/services/", headers=auth).status_code == 200
    assert httpx.get(f"{live_server.url}/services/openapi.json", headers=auth).status_code == 200
    httpx.post(f"{live_server.url}/services/_auth/token", headers=auth)
    services = list(AuditEntry.objects.order_by("pk").values_list("service", flat=True))
    assert services == ["", "openapi.json", "_auth/token"]


def test_control_characters_are_escaped_and_long_values_cut(live_server: Any, key: str) -> None:
    ClientApp.objects.filter(name="desktop").update(name="desk\x1b[2Jtop")
    # U+202E (right-to-left override) arrives as UTF-8, read as latin-1 by
    # WSGI: its middle byte is the C1 control U+0080.
    agent = "evil\x1b[31mred\x7f\u202eflipped\\".encode() + b"a" * 20
    response = httpx.post(
        f"{live_server.url}/services/add",
        content=b'{"a":1,"b":2}',
        headers=[
            (b"Content-Type", b"application/json"),
            (b"Authorization", f"Bearer {key}".encode()),
            (b"User-Agent", agent),
            (b"X-Request-ID", b"id\x01"),
        ],
    )
    assert response.status_code == 200
    row = AuditEntry.objects.get()
    assert row.user_agent == "evil\\x1b[31mred\\x7f\xe2\\x80\xaeflipped\\\\" + "a" * 20
    assert row.client_name == "desk\\x1b[2Jtop"
    # An unsafe request id is replaced by the server's own, which is echoed.
    assert row.request_id == response.headers["X-Request-ID"] != "id\x01"

    post(live_server.url, "add", b'{"a":1,"b":2}', Authorization=f"Bearer {key}",
         **{"User-Agent": "word " * 200 + "end"})  # fmt: skip
    longest = AuditEntry.objects.order_by("-pk")[0].user_agent
    assert len(longest) == 256 and longest.endswith("…")


def test_forged_log_lines_stay_on_one_line(live_server: Any, key: str) -> None:
    # Header values cannot carry a newline over HTTP/1.1, but a service name
    # in the URL can (percent-encoded); it is stored as an invalid name.
    response = httpx.post(
        f"{live_server.url}/services/add%0a2024-01-01%20admin%20ok", headers=JSON, timeout=10
    )
    assert response.status_code == 401
    assert AuditEntry.objects.get().service == audit.INVALID_NAME


def test_secrets_sent_anywhere_never_reach_the_trail(live_server: Any, key: str) -> None:
    token = "swt.eyJrIjoiQUJDREVGR0gxMjM0In0.c2lnbmF0dXJlLXRoYXQtaXMtc2VjcmV0"
    secret = key.split("_")[2]
    auth = {"Authorization": f"Bearer {key}"}
    # The key pasted into the URL, the user agent and the request id; its
    # secret alone; a token; a base64 signature.
    post(live_server.url, key, b"{}", **auth)
    post(live_server.url, key.lower(), b"{}", **auth)
    post(live_server.url, "add", b'{"a":1,"b":2}', **auth, **{"User-Agent": f"tool {key} x"})
    post(live_server.url, "add", b'{"a":1,"b":2}', **auth, **{"User-Agent": f"tool/{secret}"})
    post(live_server.url, "add", b'{"a":1,"b":2}', **auth, **{"User-Agent": token})
    post(live_server.url, "add", b'{"a":1,"b":2}', **auth, **{"X-Request-ID": key})
    post(live_server.url, "add", b'{"a":1,"b":2}', **auth, **{"X-Request-ID": secret})
    signature = (
        "sig1=:K2qGT5srn2OGbOIDzQ6kYT+ruaycnDAAUpKv+ePFfD0RAxn/"
        "1BUeZx/Kdrq32DrfakQ6bPsvB9aqZqognNT6Be4=:"
    )
    post(live_server.url, "add", b'{"a":1,"b":2}', **auth, **{"User-Agent": signature})
    post(live_server.url, "add", b'{"a":1,"b":2}', Authorization=f"Bearer {token}")
    rows = AuditEntry.objects.order_by("pk")
    assert rows.count() == 9
    assert [r.service for r in rows[:2]] == [audit.INVALID_NAME] * 2
    assert "[redacted]" in rows[2].user_agent and rows[2].user_agent.startswith("tool ")
    assert_no_secret(key, token, signature[6:-1], key.lower(), secret.lower())


def test_a_failing_service_still_leaves_its_entry(live_server: Any, key: str) -> None:
    response = post(live_server.url, "boom", Authorization=f"Bearer {key}")
    assert response.status_code == 500
    assert "secret internal detail" not in response.text
    row = AuditEntry.objects.get()
    assert (row.status, row.error_type, row.service) == (500, "InternalError", "boom")


@pytest.fixture
def atomic_requests() -> Iterator[None]:
    # The same dict Django's handler and the views read ATOMIC_REQUESTS from.
    db = connection.settings_dict
    saved = db["ATOMIC_REQUESTS"]
    db["ATOMIC_REQUESTS"] = True
    assert django_settings.DATABASES["default"]["ATOMIC_REQUESTS"] is True
    try:
        yield
    finally:
        db["ATOMIC_REQUESTS"] = saved


def test_the_entry_survives_the_rollback_of_atomic_requests(
    live_server: Any, key: str, atomic_requests: None
) -> None:
    response = post(
        live_server.url, "write_then_fail", b'{"name": "ghost"}', Authorization=f"Bearer {key}"
    )
    assert response.status_code == 500
    # The service's row was rolled back; the audit entry was not.
    assert not ClientApp.objects.filter(name="ghost").exists()
    row = AuditEntry.objects.get()
    assert (row.status, row.service, row.client_name) == (500, "write_then_fail", "desktop")


def _raw_request(url: str, key: str, service: str, body: bytes) -> tuple[socket.socket, bytes]:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10)
    head = (
        f"POST /services/{service} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return sock, head


def _wait_for_entries(count: int, timeout: float = 15) -> list[AuditEntry]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(AuditEntry.objects.order_by("pk"))
        if len(rows) >= count:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"expected {count} audit entries within {timeout} s")


def test_a_client_that_hangs_up_still_leaves_an_entry(live_server: Any, key: str) -> None:
    # 1. Gone right after sending the request.
    body = b'{"a": 1, "b": 2}'
    sock, head = _raw_request(live_server.url, key, "add", body)
    sock.sendall(head + body)
    sock.close()
    # 2. Gone during a large (8 MB) response, after its first bytes.
    big = json.dumps({"value": "x" * 8_000_000}).encode()
    sock, head = _raw_request(live_server.url, key, "echo", big)
    sock.sendall(head + big)
    assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    sock.close()
    # 3. Gone in the middle of sending its body.
    sock, head = _raw_request(live_server.url, key, "add", body)
    sock.sendall(head + body[:5])
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    rows = _wait_for_entries(3)
    by_service = sorted((r.service, r.status, r.bytes_in) for r in rows)
    assert by_service == [("add", 200, len(body)), ("add", 400, 0), ("echo", 200, len(big))]
    assert all(r.client_name == "desktop" for r in rows)
    assert_no_secret(key)


def test_nothing_is_written_when_audit_is_off(live_server: Any, key: str) -> None:
    with sw_settings(AUDIT=False):
        assert (
            post(
                live_server.url, "add", b'{"a":1,"b":2}', Authorization=f"Bearer {key}"
            ).status_code
            == 200
        )
        assert post(live_server.url, "add").status_code == 401
    assert AuditEntry.objects.count() == 0


def test_an_entry_costs_one_insert_and_no_other_query(client: Any, auth: dict[str, str]) -> None:
    # Warm up: the key's last_used write happens once a minute at most.
    client.post("/services/add", {"a": 1, "b": 2}, content_type="application/json", headers=auth)
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            "/services/add", {"a": 1, "b": 2}, content_type="application/json", headers=auth
        )
    assert response.status_code == 200
    touching = [q["sql"] for q in queries if "servicewire_auditentry" in q["sql"]]
    assert len(touching) == 1 and touching[0].startswith("INSERT")
    # The key look-up and the insert; nothing else.
    assert len(queries) == 2, [q["sql"] for q in queries]


def test_a_sites_receivers_of_the_entrys_signals_still_get_every_entry(
    client: Any, auth: dict[str, str]
) -> None:
    from django.db.models.signals import post_save

    seen: list[tuple[str, int, bool]] = []

    def forward(sender: Any, instance: AuditEntry, created: bool, **kwargs: Any) -> None:
        seen.append((instance.service, instance.status, created))

    post_save.connect(forward, sender=AuditEntry)
    try:
        client.post(
            "/services/add", {"a": 1, "b": 2}, content_type="application/json", headers=auth
        )
        client.post("/services/nope", b"{}", content_type="application/json", headers=auth)
    finally:
        post_save.disconnect(forward, sender=AuditEntry)
    assert seen == [("add", 200, True), ("nope", 404, True)]
    assert AuditEntry.objects.count() == 2


def test_a_failed_write_is_logged_and_the_response_goes_out(
    live_server: Any, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    with connection.schema_editor() as editor:
        editor.delete_model(AuditEntry)
    try:
        with caplog.at_level(logging.ERROR, logger="servicewire.audit"):
            response = post(
                live_server.url,
                "add",
                b'{"a":1,"b":2}',
                Authorization=f"Bearer {key}",
                **{"User-Agent": key},
            )
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(AuditEntry)
    assert response.status_code == 200 and response.json() == 3
    logged = [r.getMessage() for r in caplog.records if r.name == "servicewire.audit"]
    assert len(logged) == 1 and "not written" in logged[0]
    assert key.split("_")[2] not in caplog.text


def test_the_command_lists_filters_and_prints_json(live_server: Any, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    post(live_server.url, "add", b'{"a":1,"b":2}', **auth)
    post(live_server.url, "echo", b'{"value":1}', **auth)
    post(live_server.url, "add")
    AuditEntry.objects.filter(service="echo").update(time=timezone.now() - timedelta(hours=2))

    lines = run("audit", "--json").splitlines()
    assert len(lines) == 3
    parsed = [json.loads(line) for line in lines]
    assert all(list(p) == list(audit.FIELDS) for p in parsed)
    assert [p["service"] for p in parsed] == ["echo", "add", "add"]  # oldest first
    assert parsed[1]["client"] == "desktop" and parsed[1]["status"] == 200
    assert parsed[2]["client"] == "" and parsed[2]["status"] == 401

    assert len(run("audit", "--json", "--client", "desktop").splitlines()) == 2
    assert len(run("audit", "--json", "--service", "echo").splitlines()) == 1
    assert len(run("audit", "--json", "--since", "1h").splitlines()) == 2
    assert run("audit", "--json", "--client", "nobody") == ""

    table = run("audit", "--since", "1h").splitlines()
    assert table[0].split()[:3] == ["TIME", "STATUS", "CLIENT"]
    assert len(table) == 3
    assert run("audit", "--client", "nobody").splitlines()[-1] == "No audit entries."
    with pytest.raises(CommandError, match="--since: not a duration"):
        run("audit", "--since", "yesterday")
    for line in lines:
        assert key.split("_")[2] not in line


def test_prune_deletes_only_older_entries_and_says_how_many(live_server: Any, key: str) -> None:
    for _ in range(3):
        post(live_server.url, "add")
    old = AuditEntry.objects.order_by("pk")[:2]
    AuditEntry.objects.filter(pk__in=[r.pk for r in old]).update(
        time=timezone.now() - timedelta(days=91)
    )
    with pytest.raises(CommandError, match="--older-than: not a duration"):
        run("audit", "prune", "--older-than", "ninety days")
    assert AuditEntry.objects.count() == 3
    assert run("audit", "prune", "--older-than", "90d").strip() == (
        "Deleted 2 audit entries older than 90d."
    )
    assert AuditEntry.objects.count() == 1
    assert "Deleted 0 " in run("audit", "prune", "--older-than", "90d")


def test_the_admin_shows_the_trail_read_only(live_server: Any, key: str, admin_client: Any) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    post(live_server.url, "add", b'{"a":1,"b":2}', **auth, **{"X-Request-ID": "find-me-42"})
    post(live_server.url, "echo", b'{"value":1}', **auth)
    post(live_server.url, "add")
    entry = AuditEntry.objects.get(request_id="find-me-42")
    base = "/admin/servicewire/auditentry/"

    listing = admin_client.get(base)
    assert listing.status_code == 200
    page = listing.content.decode()
    assert "find-me-42" in page and "Add audit entry" not in page
    assert key.split("_")[2] not in page
    assert admin_client.get(base, {"status__exact": "401"}).context["cl"].result_count == 1
    assert admin_client.get(base, {"service__exact": "echo"}).context["cl"].result_count == 1
    desktop = ClientApp.objects.get(name="desktop")
    assert admin_client.get(base, {"client__id__exact": desktop.pk}).context["cl"].result_count == 2
    found = admin_client.get(base, {"q": "find-me-42"}).context["cl"].result_list
    assert [e.pk for e in found] == [entry.pk]

    assert admin_client.get(f"{base}add/").status_code == 403
    detail = admin_client.get(f"{base}{entry.pk}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    changed = admin_client.post(f"{base}{entry.pk}/change/", {"status": "200", "service": "x"})
    assert changed.status_code == 403
    assert admin_client.post(f"{base}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    entry.refresh_from_db()
    assert entry.service == "add"
    assert AuditEntry.objects.count() == 3


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("servicewire", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_on_postgresql_an_entry_goes_through_psycopg_with_the_values_a_save_stores(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("psycopg's own cursor writes the entry on PostgreSQL only")
    import psycopg

    from servicewire.auth import Caller

    client = ClientApp.objects.create(name="desktop\x1b[31m")
    caller = Caller(client=client, key_id="k" * 12)
    record = audit.AuditRecord("r" * 32, "10.0.0.1", "agent\n", "add", caller, bytes_in=7)
    executed: list[str] = []
    execute = psycopg.Cursor.execute

    def spy(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if type(self) is psycopg.Cursor:  # not Django's cursor (a ClientCursor)
            executed.append(str(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", spy)
    audit.write(record, 200, 11)
    assert len(executed) == 1 and executed[0].startswith("INSERT")
    written = AuditEntry.objects.get()
    saved = audit.entry(record, 200, 11)
    saved.save()
    for field in AuditEntry._meta.concrete_fields:
        if field.name not in ("id", "duration_ms"):
            assert getattr(written, field.attname) == getattr(saved, field.attname), field.name

    # A failed statement is logged, and Django checks the connection when the
    # request ends, as after any failed query.
    missing = audit._insert_sql(connection).replace(AuditEntry._meta.db_table, "nowhere")
    monkeypatch.setattr(audit, "_insert_sql", lambda connection: missing)
    connection.errors_occurred = False
    with caplog.at_level(logging.ERROR, logger="servicewire.audit"):
        audit.write(record, 200, 11)
    assert "not written: ProgrammingError" in caplog.text
    assert connection.errors_occurred
    assert AuditEntry.objects.count() == 2
