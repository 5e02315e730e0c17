"""Signed requests (RFC 9421, ed25519), attacked for real over HTTP.

Every test talks to pytest-django's ``live_server`` through a real socket:
the client signs with :class:`servicewire.signing.SignatureAuth`, and the
attacks re-send, edit or forge the signed requests with plain httpx.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver
from http_message_signatures.algorithms import ED25519

from servicewire import AsyncClient, Client, cli
from servicewire.errors import Unauthorized
from servicewire.models import ApiKey, AuditEntry, ClientApp
from servicewire.signatures import register_public_key
from servicewire.signing import (
    COVERED_COMPONENTS,
    SignatureAuth,
    content_digest,
    generate_private_key,
    load_private_key,
    load_public_key,
    public_key_text,
    write_private_key,
)

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
SKEW = 300
BODY = b'{"a": 2, "b": 3}'


@dataclass
class Signer:
    """A client holding a registered signing key."""

    client: ClientApp
    key_id: str
    private: Ed25519PrivateKey
    path: Path

    def auth(self, clock: Callable[[], float] = time.time) -> SignatureAuth:
        return SignatureAuth(self.key_id, self.private, clock=clock)


@pytest.fixture(autouse=True)
def _many_failures_allowed(settings: Any) -> Iterator[None]:
    # These tests fail authentication on purpose, dozens of times, from one
    # address; the failure limit has tests of its own.
    settings.SERVICEWIRE = {**settings.SERVICEWIRE, "AUTH_FAILURE_RATE": "100000/m"}
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def make_signer(tmp_path: Path) -> Callable[..., Signer]:
    counter = iter(range(1_000))

    def make(name: str | None = None) -> Signer:
        client, _ = ClientApp.objects.get_or_create(name=name or f"signer-{next(counter)}")
        private = generate_private_key()
        path = tmp_path / f"{client.name}-{uuid.uuid4().hex[:6]}.pem"
        write_private_key(path, private)
        key = register_public_key(client, public_key_text(private))
        return Signer(client, key.key_id, private, path)

    return make


@pytest.fixture
def signer(make_signer: Callable[..., Signer]) -> Signer:
    return make_signer("signer")


@pytest.fixture
def url(live_server: Any) -> str:
    return f"{live_server.url}/services/"


def signed(
    url: str,
    signer: Signer,
    body: bytes = BODY,
    *,
    clock: Callable[[], float] = time.time,
    method: str = "POST",
) -> httpx.Request:
    """A request to ``url`` signed as the real client signs it."""
    request = httpx.Request(
        method,
        url,
        content=body,
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-Request-ID": uuid.uuid4().hex,
        },
    )
    signer.auth(clock).sign(request)
    return request


@dataclass
class _Msg:
    method: str
    url: str
    headers: httpx.Headers


def forged(
    url: str,
    signer: Signer,
    *,
    covered: tuple[str, ...] = COVERED_COMPONENTS,
    nonce: str | None = "",
    key_id: str | None = None,
    include_alg: bool = True,
    digest: str = "sha-256",
) -> httpx.Request:
    """A request signed with the library directly, with the choices given.

    ``nonce`` is random unless given (None: no nonce at all).
    """
    request = httpx.Request(
        "POST",
        url,
        content=BODY,
        headers={"Content-Type": "application/json", "X-Request-ID": uuid.uuid4().hex},
    )
    request.headers["Content-Digest"] = content_digest(BODY, digest)
    key_id = key_id or signer.key_id
    HTTPMessageSigner(
        signature_algorithm=ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: signer.private}),
    ).sign(
        _Msg(request.method, str(request.url), request.headers),
        key_id=key_id,
        created=datetime.now(UTC),
        nonce=nonce if nonce != "" else uuid.uuid4().hex,
        label="sw",
        covered_component_ids=covered,
        use_existing_digest=True,
        include_alg=include_alg,
    )
    return request


def resend(
    request: httpx.Request,
    *,
    method: str | None = None,
    url: str | None = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Send ``request`` again, raw, with any part replaced."""
    kept = httpx.Headers(request.headers)
    del kept["Content-Length"]
    del kept["Host"]
    # Replaced, not added: each edited field keeps one line.
    kept.update(headers or {})
    return httpx.request(
        method or request.method,
        url or str(request.url),
        headers=kept,
        content=request.content if content is None else content,
        timeout=30,
    )


def send(request: httpx.Request) -> httpx.Response:
    with httpx.Client(timeout=30) as http:
        return http.send(request)


def refused(response: httpx.Response, reason: str = "") -> str:
    """Assert a 401 with the Unauthorized envelope; return its message."""
    assert response.status_code == 401, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["type"] == "Unauthorized"
    assert reason.lower() in error["message"].lower(), error["message"]
    return str(error["message"])


def audit_row(request_id: str) -> AuditEntry | None:
    return AuditEntry.objects.filter(request_id=request_id).first()


def assert_audited_refusal(response: httpx.Response, secrets: list[str]) -> None:
    """The refusal left one audit row (status 401) with no secret in it."""
    request_id = response.headers["X-Request-ID"]
    row = audit_row(request_id)
    assert row is not None, f"no audit row for request {request_id}"
    assert row.status == 401 and row.error_type == "Unauthorized"
    text = " ".join(str(v) for v in AuditEntry.objects.filter(pk=row.pk).values().first().values())
    for secret in secrets:
        assert secret not in text


# -- the happy paths ---------------------------------------------------------


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_signed_calls_work_in_both_codecs(url: str, signer: Signer, codec: str) -> None:
    with Client(url, key_id=signer.key_id, signing_key=str(signer.path), codec=codec) as sw:
        assert sw.add(a=2, b=3) == 5
        assert sw.whoami() == os.getpid()  # an empty body, signed and digested too
        assert sw.add(a=1, b=1) == 2  # every call has its own nonce
    key = ApiKey.objects.get(key_id=signer.key_id)
    assert key.last_used is not None
    rows = AuditEntry.objects.filter(key_id=signer.key_id, service="add")
    assert rows.count() == 2
    assert {(r.status, r.credential, r.client_name) for r in rows} == {(200, "signature", "signer")}


def test_signed_async_calls_work(url: str, signer: Signer) -> None:
    async def main() -> tuple[Any, Any]:
        async with AsyncClient(url, key_id=signer.key_id, signing_key=str(signer.path)) as sw:
            return await sw.add(a=20, b=22), await sw.call("slow_add", a=1, b=1)

    assert asyncio.run(main()) == (42, 2)


def test_five_megabyte_bodies_are_signed_and_checked(url: str, signer: Signer) -> None:
    samples = np.arange(655_360, dtype=np.float64)  # 5 MiB
    text = "x" * (5 * 2**20)
    with Client(url, key_id=signer.key_id, signing_key=str(signer.path)) as sw:
        np.testing.assert_array_equal(sw.science.double(samples=samples), samples * 2)
    with Client(url, key_id=signer.key_id, signing_key=str(signer.path), codec="json") as sw:
        assert sw.echo(value=text) == text


def test_key_from_the_environment_signs(
    url: str, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = signer.private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    monkeypatch.setenv("SERVICEWIRE_KEY_ID", signer.key_id)
    for value in (str(signer.path), signer.path.read_text(), base64.b64encode(raw).decode()):
        monkeypatch.setenv("SERVICEWIRE_SIGNING_KEY", value)
        with Client(url) as sw:
            assert sw.add(a=1, b=2) == 3


# -- replays, tampering, time ------------------------------------------------


def test_a_replayed_request_is_refused(url: str, signer: Signer) -> None:
    request = signed(url + "add", signer)
    first = send(request)
    assert first.status_code == 200 and first.json() == 5
    again = send(request)  # the very same bytes
    refused(again, "replayed")
    # On a new connection with a new request id: still the same nonce.
    refused(resend(request, headers={"X-Request-ID": uuid.uuid4().hex}), "replayed")
    assert_audited_refusal(again, [request.headers["Signature"]])


def test_a_tampered_body_is_refused(url: str, signer: Signer) -> None:
    request = signed(url + "add", signer)
    response = resend(request, content=b'{"a": 2, "b": 4}')
    refused(response, "does not match its Content-Digest")
    assert_audited_refusal(response, [request.headers["Signature"]])
    # The signature verified before the body was read: the row names the key.
    row = audit_row(response.headers["X-Request-ID"])
    assert row is not None and (row.key_id, row.credential) == (signer.key_id, "signature")
    # A digest rewritten to match the new body breaks the signature instead.
    other = signed(url + "add", signer)
    body = b'{"a": 200, "b": 4}'
    refused(
        resend(other, content=body, headers={"Content-Digest": content_digest(body)}),
        "bad signature",
    )


def test_a_tampered_method_or_path_is_refused(url: str, signer: Signer) -> None:
    refused(resend(signed(url + "add", signer), url=url + "echo"), "bad signature")
    # Signed for PUT, sent as POST. (Sent the other way round, the view
    # answers 405 for the method before it reports the credential.)
    refused(resend(signed(url + "add", signer, method="PUT"), method="POST"), "bad signature")
    refused(resend(signed(url + "add", signer), url=url + "add?x=1"), "bad signature")
    # Same path on another authority (the server's other name).
    other = signed(url.replace("localhost", "127.0.0.1") + "add", signer)
    refused(resend(other, url=url.replace("127.0.0.1", "localhost") + "add"), "bad signature")


def test_a_stale_signature_is_refused(url: str, signer: Signer) -> None:
    request = signed(url + "add", signer, clock=lambda: time.time() - SKEW - 1)
    response = send(request)
    refused(response, "s ago; this site accepts at most 300 s")
    assert_audited_refusal(response, [request.headers["Signature"]])
    # Just inside the window is fine.
    assert send(signed(url + "add", signer, clock=lambda: time.time() - SKEW + 5)).json() == 5


def test_a_signature_from_the_future_is_refused(url: str, signer: Signer) -> None:
    # `created` is a whole second, truncated: +1 s could land within the skew
    # by the time the server reads its clock; +3 s cannot, unless it waits 2 s.
    response = send(signed(url + "add", signer, clock=lambda: time.time() + SKEW + 3))
    refused(response, "in the future")
    assert send(signed(url + "add", signer, clock=lambda: time.time() + SKEW - 5)).json() == 5


def test_the_skew_is_configurable(url: str, signer: Signer, settings: Any) -> None:
    settings.SERVICEWIRE = {**settings.SERVICEWIRE, "SIGNATURE_MAX_SKEW": 30}
    refused(send(signed(url + "add", signer, clock=lambda: time.time() - 31)), "at most 30 s")
    assert send(signed(url + "add", signer, clock=lambda: time.time() - 25)).json() == 5


# -- what a signature must cover and carry -----------------------------------


@pytest.mark.parametrize("missing", COVERED_COMPONENTS)
def test_a_signature_missing_a_component_is_refused(url: str, signer: Signer, missing: str) -> None:
    covered = tuple(c for c in COVERED_COMPONENTS if c != missing)
    response = send(forged(url + "add", signer, covered=covered))
    refused(response, f"misses {missing}")


def test_extra_components_are_allowed(url: str, signer: Signer) -> None:
    response = send(forged(url + "add", signer, covered=(*COVERED_COMPONENTS, "content-type")))
    assert response.status_code == 200 and response.json() == 5


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda s: re.sub(r";created=\d+", "", s), "'created'"),
        (lambda s: re.sub(r";created=\d+", ";created=1.5", s), "'created'"),
        (lambda s: re.sub(r";created=\d+", ';created="1"', s), "'created'"),
        (lambda s: re.sub(r';keyid="\w+"', "", s), "'keyid'"),
        (lambda s: re.sub(r';keyid="\w+"', ';keyid="a b"', s), "'keyid'"),
        (lambda s: re.sub(r';nonce="[^"]+"', "", s), "'nonce'"),
        (lambda s: re.sub(r';nonce="[^"]+"', ';nonce="short"', s), "'nonce'"),
        (lambda s: re.sub(r';nonce="[^"]+"', ";nonce=" + "a" * 30, s), "'nonce'"),
        (lambda s: re.sub(r';alg="ed25519"', ';alg="hmac-sha256"', s), "alg"),
    ],
)
def test_missing_or_malformed_parameters_are_refused(
    url: str, signer: Signer, edit: Callable[[str], str], reason: str
) -> None:
    request = signed(url + "add", signer)
    sig_input = edit(request.headers["Signature-Input"])
    assert sig_input != request.headers["Signature-Input"]
    refused(resend(request, headers={"Signature-Input": sig_input}), reason)


def test_a_signature_without_alg_still_verifies(url: str, signer: Signer) -> None:
    # RFC 9421 makes alg optional; the registered key fixes the algorithm.
    assert send(forged(url + "add", signer, include_alg=False)).json() == 5


def _fuzz_cases(request: httpx.Request) -> list[dict[str, str]]:
    sig_input = request.headers["Signature-Input"]
    signature = request.headers["Signature"]
    value = signature.split("=", 1)[1]
    return [
        {"Signature-Input": ""},
        {"Signature": ""},
        {"Signature-Input": "garbage"},
        {"Signature": "garbage"},
        {"Signature-Input": "sw=("},
        {"Signature-Input": "sw=" + "(" * 500},
        {"Signature-Input": 'sw=("@method" "@target-uri"'},
        {"Signature-Input": "sw=1"},
        {"Signature-Input": 'sw="@method"'},
        {"Signature-Input": "sw=()"},
        {"Signature-Input": "x" * 5000},
        {"Signature-Input": sig_input + ", other=" + sig_input.split("=", 1)[1]},
        {"Signature-Input": sig_input.replace("sw=", "zz=", 1)},
        {"Signature-Input": sig_input.replace("sw=", "SW=", 1)},
        {"Signature-Input": sig_input.replace('"@method"', "@method")},
        {"Signature-Input": sig_input.replace('"@method"', '"@method";req')},
        {"Signature-Input": sig_input.replace('"@method"', '"@method" "@method"')},
        {"Signature-Input": sig_input.replace('"@method"', '"@method" "@status"')},
        {"Signature-Input": sig_input.replace('"@method"', '"@method" "x-not-sent"')},
        {"Signature-Input": sig_input.replace('"@method"', '"@method" "@query-param";name="q"')},
        {"Signature-Input": sig_input.replace('"@method"', '"@method" "@bogus"')},
        {"Signature-Input": sig_input.replace('"@method"', '"@METHOD"')},
        {"Signature-Input": sig_input + ";expires=1"},
        {"Signature-Input": sig_input + ";weird=1"},
        {"Signature-Input": re.sub(r";created=\d+", ";created=" + "9" * 15, sig_input)},
        {"Signature-Input": re.sub(r";created=\d+", ";created=-1", sig_input)},
        {"Signature-Input": sig_input + ";created=1"},
        {"Signature": "sw=" + value[:-5] + ":"},
        {"Signature": "sw=:" + base64.b64encode(b"\0" * 64).decode() + ":"},
        {"Signature": "sw=:" + base64.b64encode(b"\0" * 10).decode() + ":"},
        {"Signature": "sw=:!!!:"},
        {"Signature": "sw=abc"},
        {"Signature": "sw=(:AAAA:)"},
        {"Signature": "zz=" + value},
        {"Signature": signature + ", sw2=" + value},
        {"Signature": "sw=" + value + ";x=1"},
        {"Signature": signature + ", " + signature},
        {"Content-Digest": ""},
        {"Content-Digest": "garbage"},
        {"Content-Digest": "md5=:AAAAAAAAAAAAAAAAAAAAAA==:"},
        {"Content-Digest": "sha-256=:AAAA:"},
        {"Content-Digest": "sha-256=abc"},
        {"Content-Digest": "sha-256=(:AAAA:)"},
        {"Content-Digest": content_digest(b"other")},
        {
            "Content-Digest": request.headers["Content-Digest"]
            + ", "
            + content_digest(b"x", "sha-512")
        },
        {"Content-Digest": "x" * 5000},
        {"Signature-Input": "sw=\u00e9("},
    ]


def test_malformed_signature_headers_are_401_never_500(url: str, signer: Signer) -> None:
    request = signed(url + "add", signer)
    cases = _fuzz_cases(request)
    assert 40 <= len(cases) <= 60
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=30) as http:
        for case in cases:
            assert time.monotonic() < deadline
            request_id = uuid.uuid4().hex
            edits = {**case, "X-Request-ID": request_id}
            # Replaced, not added: each case is the one field line of its name.
            replaced = {name.lower().encode() for name in edits} | {b"content-length"}
            headers = [(k, v) for k, v in request.headers.raw if k.lower() not in replaced]
            headers += [(k.encode(), v.encode("latin-1")) for k, v in edits.items()]
            # Every case is an edit of the same signed request: none of them
            # may verify, so none may spend its nonce.
            response = http.post(str(request.url), headers=headers, content=request.content)
            assert response.status_code == 401, (case, response.status_code, response.text)
            assert response.json()["error"]["type"] == "Unauthorized", case
            assert_audited_refusal(response, [request.headers["Signature"]])
    # The original, unedited, still works: no refused variant spent its nonce.
    assert send(request).json() == 5


# -- which key ---------------------------------------------------------------


def test_a_bearer_keys_id_cannot_sign(
    url: str, signer: Signer, make_key: Callable[..., str]
) -> None:
    bearer = make_key("bearer-client")
    bearer_id = bearer.split("_")[1]
    response = send(forged(url + "add", signer, key_id=bearer_id))
    refused(response, "no usable signing key")
    assert_audited_refusal(response, [bearer])


def test_a_key_id_of_another_client_does_not_verify(
    url: str, make_signer: Callable[..., Signer]
) -> None:
    alice, mallory = make_signer("alice"), make_signer("mallory")
    # Mallory signs with her own private key but names Alice's key.
    response = send(forged(url + "add", mallory, key_id=alice.key_id))
    refused(response, "bad signature")
    assert ApiKey.objects.get(key_id=alice.key_id).last_used is None


def test_an_unknown_key_id_is_refused(url: str, signer: Signer) -> None:
    refused(send(forged(url + "add", signer, key_id="Nosuchkey123")), "no usable signing key")


def test_a_signing_key_is_no_bearer_key(url: str, signer: Signer) -> None:
    # The public key is not a secret: nothing about it may pass as one.
    key = ApiKey.objects.get(key_id=signer.key_id)
    assert key.secret_hash == ""
    public = key.public_key.removeprefix("ed25519:")
    for attempt in (
        f"sw_{signer.key_id}_{'A' * 43}",
        f"sw_{signer.key_id}_{re.sub('[^A-Za-z0-9]', 'A', public)[:43]}",
        f"sw_{signer.key_id}_{'0' * 43}",
        key.public_key,
    ):
        response = httpx.post(
            url + "add",
            headers={"Authorization": f"Bearer {attempt}", "Content-Type": "application/json"},
            content=BODY,
        )
        refused(response)


def test_revoking_a_signing_key_stops_it_on_the_next_call(url: str, signer: Signer) -> None:
    with Client(url, key_id=signer.key_id, signing_key=str(signer.path)) as sw:
        assert sw.add(a=1, b=1) == 2
        ApiKey.objects.filter(key_id=signer.key_id).update(revoked=timezone.now())
        with pytest.raises(Unauthorized, match="no usable signing key"):
            sw.add(a=1, b=1)
    ApiKey.objects.filter(key_id=signer.key_id).update(revoked=None)
    ClientApp.objects.filter(pk=signer.client.pk).update(is_active=False)
    refused(send(signed(url + "add", signer)), "no usable signing key")


def test_an_expired_signing_key_is_refused(url: str, signer: Signer) -> None:
    ApiKey.objects.filter(key_id=signer.key_id).update(expires=timezone.now())
    refused(send(signed(url + "add", signer)), "no usable signing key")


def test_the_database_holds_no_private_key(signer: Signer) -> None:
    raw = signer.private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    pem_body = "".join(signer.path.read_text().splitlines()[1:-1])
    needles = [base64.b64encode(raw).decode(), pem_body, base64.urlsafe_b64encode(raw).decode()]
    key = ApiKey.objects.get(key_id=signer.key_id)
    assert key.public_key == public_key_text(signer.private)
    assert load_public_key(key.public_key) is not None
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')  # names from the schema
            dump = repr(cursor.fetchall())
            for needle in needles:
                assert needle not in dump, table


# -- the client side ---------------------------------------------------------


def test_the_private_key_never_shows(signer: Signer, url: str) -> None:
    pem = signer.path.read_text()
    body = "".join(pem.splitlines()[1:-1])
    auth = SignatureAuth(signer.key_id, pem)
    assert body not in repr(auth) and signer.key_id in repr(auth)
    with Client(url, key_id=signer.key_id, signing_key=pem) as sw:
        assert body not in repr(sw)
    broken = pem.replace(body[10:20], "**********")
    # (Any 32 bytes are an ed25519 seed: only the wrong lengths can be caught.)
    for bad in (broken, body, body[:40], "/no/such/" + body[:30]):
        with pytest.raises(ValueError) as caught:
            SignatureAuth(signer.key_id, bad)
        assert body[:20] not in str(caught.value) and body[-20:] not in str(caught.value)


def test_a_client_without_the_signing_extra_still_imports() -> None:
    code = (
        "import sys\n"
        "sys.modules['cryptography'] = None\n"
        "sys.modules['http_message_signatures'] = None\n"
        "from servicewire import Client\n"
        "Client('http://127.0.0.1:9/', 'sw_abcdefghijkl_' + 'a' * 43)\n"
        "try:\n"
        "    Client('http://127.0.0.1:9/', key_id='abc', signing_key='x')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'servicewire[signing]'" in done.stdout


def test_load_private_key_forms(signer: Signer) -> None:
    raw = signer.private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    expected = public_key_text(signer.private)
    for form in (
        str(signer.path),
        signer.path,
        signer.path.read_text(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ):
        assert public_key_text(load_private_key(form)) == expected


def test_public_key_forms_and_garbage(signer: Signer) -> None:
    public = signer.private.public_key()
    expected = public_key_text(public)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    ssh = public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    for form in (
        expected,
        expected.removeprefix("ed25519:"),
        pem,
        ssh + " me@host",
        f" {expected}\n",
    ):
        assert public_key_text(load_public_key(form)) == expected
    for garbage in ("", "ed25519:", "ed25519:AAAA", "sw_abc", "-----BEGIN PUBLIC KEY-----\nx"):
        with pytest.raises(ValueError):
            load_public_key(garbage)
    with pytest.raises(ValueError, match="private key"):
        load_public_key(signer.path.read_text())


def test_content_digest_is_rfc_9530() -> None:
    # RFC 9530 appendix B.1: {"hello": "world"} followed by a newline.
    body = b'{"hello": "world"}\n'
    assert content_digest(body) == "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"
    assert content_digest(body, "sha-512").startswith("sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d")
    with pytest.raises(ValueError):
        content_digest(body, "md5")


def test_a_sha_512_digest_is_accepted(url: str, signer: Signer) -> None:
    request = forged(url + "add", signer, digest="sha-512")
    assert request.headers["Content-Digest"].startswith("sha-512=")
    assert send(request).json() == 5
    other = forged(url + "add", signer, digest="sha-512")
    refused(resend(other, content=b'{"a": 2, "b": 9}'), "does not match")


# -- keygen and key create ---------------------------------------------------


def test_keygen_writes_a_0600_file_and_prints_the_public_key_last(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    for command in (
        [sys.executable, "-m", "servicewire"],
        [str(Path(sys.executable).parent / "servicewire")],
    ):
        path.unlink(missing_ok=True)
        done = subprocess.run(
            [*command, "keygen", str(path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        last = done.stdout.strip().splitlines()[-1]
        assert last == public_key_text(load_private_key(path))
        assert "PRIVATE" not in done.stdout and path.read_text() not in done.stdout
    before = path.read_bytes()
    again = subprocess.run(
        [sys.executable, "-m", "servicewire", "keygen", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "--force" in again.stderr
    assert path.read_bytes() == before
    path.chmod(0o644)
    forced = subprocess.run(
        [sys.executable, "-m", "servicewire", "keygen", str(path), "--force"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert forced.returncode == 0
    assert path.read_bytes() != before and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keygen_never_follows_a_symlink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    link = tmp_path / "key.pem"
    link.symlink_to(target)
    assert cli.main(["keygen", str(link)]) == 1
    assert target.read_text() == "keep me"
    assert cli.main(["keygen", str(tmp_path / "missing-dir" / "key.pem")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_key_create_public_key_in_a_real_process(tmp_path: Path) -> None:
    database = tmp_path / "site.sqlite3"
    (tmp_path / "site_settings.py").write_text(
        "from tests.settings import *  # noqa: F403\n"
        f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.sqlite3', "
        f"'NAME': {str(database)!r}}}}}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    env.pop("SERVICEWIRE_TEST_DATABASE", None)

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "django", *args, "--settings", "site_settings"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert manage("migrate", "--verbosity", "0").returncode == 0
    assert manage("servicewire", "client", "add", "laptop").returncode == 0
    key_file = tmp_path / "laptop.pem"
    keygen = subprocess.run(
        [sys.executable, "-m", "servicewire", "keygen", str(key_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    public = keygen.stdout.strip().splitlines()[-1]
    public_file = tmp_path / "laptop.pub"
    public_file.write_text(public + "\n")
    for given in (public, str(public_file)):
        done = manage("servicewire", "key", "create", "laptop", "--public-key", given)
        assert done.returncode == 0, done.stderr
        key_id = done.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"[A-Za-z0-9]{12}", key_id)
    listing = manage("servicewire", "key", "list").stdout
    assert key_id in listing and "ed25519" in listing
    # Garbage, and the private key file by mistake (the other forms of
    # garbage are tested on load_public_key, without a process each).
    for garbage in ("ed25519:AAAA", str(key_file)):
        done = manage("servicewire", "key", "create", "laptop", "--public-key", garbage)
        assert done.returncode != 0 and "CommandError: --public-key" in done.stderr
        assert key_file.read_text().splitlines()[1] not in done.stderr
    # The bearer path is unchanged: the secret key alone on the last line.
    bearer = manage("servicewire", "key", "create", "laptop").stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"sw_[A-Za-z0-9]{12}_[A-Za-z0-9]{43}", bearer)
    import sqlite3

    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT key_id, secret_hash, public_key FROM servicewire_apikey ORDER BY id"
        ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows[:2]] == [(r[0], "", public) for r in rows[:2]]
    assert rows[2][1] and not rows[2][2]
    assert len(rows) == 3
