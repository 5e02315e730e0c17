"""The production set-up for real: gunicorn workers sharing PostgreSQL and Redis.

A fresh PostgreSQL database is made for the module, migrated, and served by
gunicorn with three workers on 127.0.0.1; keys are administered with the real
management command in a separate process, as an operator would. Skipped with
the reason shown when PostgreSQL or Redis is absent (mandatory under CI).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servicewire import Client
from servicewire.errors import Unauthorized
from tests.servers import django_command, free_port, stop, wait_for_port

pytestmark = pytest.mark.production

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 3


@dataclass
class Site:
    url: str
    env: dict[str, str]
    access_log: Path

    def manage(self, *args: str) -> str:
        """Run ``manage.py servicewire ...`` in its own process; its stdout."""
        return django_command(self.env, ROOT, "servicewire", *args)


def _admin_connection() -> object:
    import psycopg

    return psycopg.connect(
        host="127.0.0.1", port=5432, user="postgres", dbname="test", autocommit=True
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    access_log = tmp_path_factory.mktemp("gunicorn") / "access.log"
    database = f"servicewire_e2e_{uuid.uuid4().hex[:12]}"
    admin = _admin_connection()
    admin.execute(f'CREATE DATABASE "{database}"')  # type: ignore[attr-defined]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.production_settings",
        "SERVICEWIRE_E2E_DB": database,
        "PYTHONPATH": str(ROOT),
    }
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
            env=env,
            cwd=ROOT,
            check=True,
            timeout=120,
        )
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "tests.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(WORKERS),
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--timeout",
                "60",
                "--graceful-timeout",
                "5",
                "--log-level",
                "warning",
                "--access-logfile",
                str(access_log),
                "--access-logformat",
                "%(U)s %(s)s %(b)s",
            ],
            env=env,
            cwd=ROOT,
        )
        wait_for_port(port, process, timeout=60)
        yield Site(url=f"http://127.0.0.1:{port}/services/", env=env, access_log=access_log)
    finally:
        if process is not None:
            stop(process)
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')  # type: ignore[attr-defined]
        admin.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def key(site: Site) -> str:
    site.manage("client", "add", "prod-desktop", "--scope", "science")
    return site.manage("key", "create", "prod-desktop").strip().splitlines()[-1]


def test_calls_are_served_by_several_workers(site: Site, key: str) -> None:
    with Client(site.url, key) as sw:
        assert sw.add(a=2, b=3) == 5

    def worker_pids(_: int) -> set[int]:
        # A fresh connection per client spreads the calls over the workers.
        with Client(site.url, key) as sw:
            return {sw.whoami() for _ in range(10)}

    with ThreadPoolExecutor(max_workers=12) as pool:
        pids = set().union(*pool.map(worker_pids, range(24), timeout=120))
    assert len(pids) >= 2, pids


def test_rich_values_and_arrays_cross_gunicorn(site: Site, key: str) -> None:
    import datetime
    import decimal

    value = {
        "when": datetime.datetime(
            2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=-3))
        ),
        "amount": decimal.Decimal("10.05"),
        "pair": (1, {2, 3}),
        2**80: frozenset({b"x"}),
    }
    samples = np.random.default_rng(7).normal(size=(500, 400))
    with Client(site.url, key) as sw:
        assert sw.echo(value=value) == value
        out = sw.science.spectrum(samples=samples)
    assert out["total"] == pytest.approx(samples.sum())
    np.testing.assert_array_equal(out["scaled"], samples * 2)


def test_revocation_is_effective_on_every_worker_at_once(site: Site) -> None:
    site.manage("client", "add", "prod-revoked")
    key = site.manage("key", "create", "prod-revoked").strip().splitlines()[-1]
    key_id = key.split("_")[1]
    with Client(site.url, key) as sw:
        assert sw.add(a=1, b=1) == 2
    listing = site.manage("key", "list")
    assert key_id in listing and key.split("_")[2] not in listing
    site.manage("key", "revoke", key_id)
    # Every worker must refuse it on the very next call: nothing is cached
    # in process memory.
    for _ in range(3 * WORKERS):
        with Client(site.url, key) as sw, pytest.raises(Unauthorized):
            sw.add(a=1, b=1)


def test_expired_key_is_refused(site: Site) -> None:
    site.manage("client", "add", "prod-expiring")
    key = site.manage("key", "create", "prod-expiring", "--expires-in", "2s")
    key = key.strip().splitlines()[-1]
    with Client(site.url, key) as sw:
        assert sw.add(a=1, b=1) == 2
        time.sleep(2.5)
        with pytest.raises(Unauthorized):
            sw.add(a=1, b=1)


def test_a_replayed_signed_request_is_refused_by_another_worker(site: Site) -> None:
    # The nonce cache is Redis, shared by the workers: a replay that lands on
    # a worker other than the one that served the original is refused too.
    import httpx

    from servicewire.signing import SignatureAuth, generate_private_key, public_key_text

    site.manage("client", "add", "prod-signer")
    private = generate_private_key()
    created = site.manage("key", "create", "prod-signer", "--public-key", public_key_text(private))
    auth = SignatureAuth(created.strip().splitlines()[-1], private)

    def signed_whoami() -> httpx.Request:
        request = httpx.Request("POST", site.url + "whoami", headers={"Accept": "application/json"})
        auth.sign(request)
        return request

    original = signed_whoami()
    with httpx.Client(timeout=30) as http:
        served = http.send(original)
    assert served.status_code == 200
    refused_by: set[int] = set()
    for _ in range(8 * WORKERS):
        # A fresh connection reaches any worker; on it, a fresh signed call
        # names that worker, and the replay on the same connection (the same
        # local port) goes to the same worker.
        with httpx.Client(timeout=30) as http:
            fresh = http.send(signed_whoami())
            fresh_port = fresh.extensions["network_stream"].get_extra_info("client_addr")
            replay = http.send(original)
            replay_port = replay.extensions["network_stream"].get_extra_info("client_addr")
        assert fresh.status_code == 200 and fresh_port == replay_port
        assert replay.status_code == 401, replay.text
        assert "replayed" in replay.json()["error"]["message"]
        refused_by.add(fresh.json())
        if refused_by - {served.json()}:
            break
    assert refused_by - {served.json()}, "every replay reached the original worker"


# Key lifecycle, rate limits and the audit trail across the workers.


def _status(url: str, key: str, service: str = "add") -> int:
    import httpx

    body = {"a": 1, "b": 2} if service == "add" else {}
    # A fresh connection per call, so that calls spread over the workers.
    response = httpx.post(
        f"{url}{service}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    return response.status_code


def _audit_rows(site: Site, *args: str) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in site.manage("audit", "--json", *args).splitlines()]


def _assert_no_secret(site: Site, *keys: str) -> None:
    trail = site.manage("audit", "--json")
    for plain in keys:
        assert plain not in trail and plain.split("_")[2] not in trail


def test_rotation_grace_then_refusal_on_every_worker(site: Site) -> None:
    site.manage("client", "add", "prod-rotating")
    old = site.manage("key", "create", "prod-rotating").strip().splitlines()[-1]
    new = site.manage("key", "rotate", old.split("_")[1], "--grace", "2s").strip().splitlines()[-1]
    rotated_at = time.monotonic()
    assert new.startswith("sw_") and new != old
    # The grace period: both keys work, on whichever worker.
    assert [_status(site.url, old) for _ in range(WORKERS)] == [200] * WORKERS
    assert _status(site.url, new) == 200
    time.sleep(max(0.0, 2.3 - (time.monotonic() - rotated_at)))
    with ThreadPoolExecutor(max_workers=6) as pool:
        after = list(pool.map(lambda _: _status(site.url, old), range(3 * WORKERS), timeout=60))
    assert after == [401] * (3 * WORKERS)
    assert _status(site.url, new) == 200
    rows = _audit_rows(site, "--client", "prod-rotating")
    assert [(r["key_id"], r["status"]) for r in rows] == [
        *[(old.split("_")[1], 200)] * WORKERS,
        (new.split("_")[1], 200),
        (new.split("_")[1], 200),
    ]
    refused = [r for r in _audit_rows(site, "--since", "1m") if r["status"] == 401]
    assert len(refused) >= 3 * WORKERS
    assert all(r["error_type"] == "Unauthorized" and r["client"] == "" for r in refused)
    _assert_no_secret(site, old, new)


def test_disabling_a_client_is_effective_on_every_worker_at_once(site: Site) -> None:
    site.manage("client", "add", "prod-fleet")
    keys = [site.manage("key", "create", "prod-fleet").strip().splitlines()[-1] for _ in range(2)]
    assert [_status(site.url, k) for k in keys] == [200, 200]
    site.manage("client", "disable", "prod-fleet")
    with ThreadPoolExecutor(max_workers=6) as pool:
        refused = list(pool.map(lambda n: _status(site.url, keys[n % 2]), range(4 * WORKERS)))
    assert refused == [401] * (4 * WORKERS)
    site.manage("client", "enable", "prod-fleet")
    assert [_status(site.url, k) for k in keys] == [200, 200]
    _assert_no_secret(site, *keys)


def test_the_rate_limit_is_shared_by_the_workers(site: Site) -> None:
    import httpx

    site.manage("client", "add", "prod-limited", "--rate", "30/m")
    key = site.manage("key", "create", "prod-limited").strip().splitlines()[-1]
    # Fixed windows aligned on the clock: start well inside one.
    left = 60 - time.time() % 60
    if left < 20:
        time.sleep(left + 0.1)

    def whoami(_: int) -> httpx.Response:
        return httpx.post(
            f"{site.url}whoami", json={}, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    # 45 calls at once, each on its own connection: exactly 30 may pass,
    # whichever workers serve them, or the counter is not atomic and shared.
    with ThreadPoolExecutor(max_workers=15) as pool:
        responses = list(pool.map(whoami, range(45), timeout=120))
    served = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert (len(served), len(limited)) == (30, 15)
    assert len({r.json() for r in served}) >= 2, "one worker served every call"
    for response in limited:
        assert response.json()["error"]["type"] == "RateLimited"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert whoami(0).status_code == 429
    # Every call, allowed or refused, left exactly one row.
    rows = _audit_rows(site, "--client", "prod-limited")
    assert sorted(r["status"] for r in rows) == [200] * 30 + [429] * 16
    assert {r["error_type"] for r in rows if r["status"] == 429} == {"RateLimited"}
    _assert_no_secret(site, key)


def test_a_client_that_hangs_up_on_gunicorn_still_leaves_an_entry(site: Site) -> None:
    from urllib.parse import urlsplit

    site.manage("client", "add", "prod-impatient")
    key = site.manage("key", "create", "prod-impatient").strip().splitlines()[-1]
    parts = urlsplit(site.url)
    body = b'{"value": "' + b"x" * 4_000_000 + b'"}'
    head = (
        f"POST {parts.path}echo HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    for hang_up_after_first_bytes in (False, True):
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(head + body)
            if hang_up_after_first_bytes:
                assert sock.recv(64).startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 20
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(rows) < 2:
        rows = _audit_rows(site, "--client", "prod-impatient")
        time.sleep(0.2)
    assert [(r["service"], r["status"], r["bytes_in"]) for r in rows] == [
        ("echo", 200, len(body))
    ] * 2
    _assert_no_secret(site, key)


def _raw_call(site: Site, key: str, body: bytes, declared: int | None = None) -> bytes:
    """The head of a JSON ``echo`` call as bytes, declaring ``declared`` bytes of body."""
    from urllib.parse import urlsplit

    parts = urlsplit(site.url)
    length = len(body) if declared is None else declared
    return (
        f"POST {parts.path}echo HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode() + body


def _connect(site: Site) -> socket.socket:
    from urllib.parse import urlsplit

    parts = urlsplit(site.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """Read ``count`` HTTP/1.1 responses with Content-Length from ``sock``."""
    stream = sock.makefile("rb")
    answers = []
    for _ in range(count):
        status = int(stream.readline().split()[1])
        length = 0
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        answers.append((status, stream.read(length)))
    return answers


def test_large_uploads_arrive_whole_and_the_connection_goes_on(site: Site, key: str) -> None:
    # Bodies of several sizes on one kept-alive connection: gunicorn's socket is
    # read straight into the destination, then gunicorn reads the next request.
    rng = np.random.default_rng(11)
    arrays = [rng.normal(size=n) for n in (3_000_000, 1, 400_000, 9)]
    with Client(site.url, key) as sw:
        for array in arrays:
            np.testing.assert_array_equal(sw.echo(value=array), array)
            assert sw.add(a=1, b=2) == 3


def test_a_request_pipelined_behind_a_body_is_served(site: Site, key: str) -> None:
    first = _raw_call(site, key, b'{"value": "' + b"a" * 300_000 + b'"}')
    second = _raw_call(site, key, b'{"value": "second"}')
    with _connect(site) as sock:
        sock.sendall(first + second)
        answers = _read_responses(sock, 2)
    assert answers[0] == (200, b'"' + b"a" * 300_000 + b'"')
    assert answers[1] == (200, b'"second"')


def test_a_body_shorter_than_its_length_gets_400_without_hanging(site: Site, key: str) -> None:
    body = b'{"value": "' + b"b" * 100_000 + b'"}'
    with _connect(site) as sock:
        sock.sendall(_raw_call(site, key, body, declared=len(body) + 5_000))
        sock.shutdown(socket.SHUT_WR)
        [(status, answer)] = _read_responses(sock, 1)
    assert status == 400
    assert b"Content-Length" in answer


def test_large_answers_leave_gunicorn_counting_every_byte_and_the_connection_open(
    site: Site, key: str
) -> None:
    # The arrays go out from their own memory (servicewire.sending), around
    # gunicorn's write: its access log still reports each answer's full size.
    array = np.arange(2_500_000, dtype=np.float64)  # 20 MB
    before = len(site.access_log.read_text().splitlines())
    with Client(site.url, key) as sw:
        for _ in range(3):
            np.testing.assert_array_equal(sw.echo(value=array), array)
            assert sw.add(a=2, b=3) == 5
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline and len(lines) < 6:
        lines = site.access_log.read_text().splitlines()[before:]
        time.sleep(0.1)
    echoes = [int(line.split()[2]) for line in lines if line.split()[0].endswith("/echo")]
    assert len(echoes) == 3
    assert all(array.nbytes < size < array.nbytes + 1000 for size in echoes)


def test_a_client_that_hangs_up_during_a_large_answer_leaves_the_workers_serving(
    site: Site, key: str
) -> None:
    from urllib.parse import urlsplit

    from servicewire import codecs

    parts = urlsplit(site.url)
    array = np.arange(6_000_000, dtype=np.float64)  # 48 MB: more than the socket buffers hold
    body = codecs.MSGPACK.encode({"value": array})
    head = (
        f"POST {parts.path}echo HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/msgpack\r\n"
        f"Accept: application/msgpack\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    for _ in range(WORKERS * 2):
        with _connect(site) as sock:
            sock.sendall(head + body)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            # Gone with most of the answer unread.
    with Client(site.url, key) as sw:
        for _ in range(WORKERS * 4):
            assert sw.add(a=1, b=1) == 2
        np.testing.assert_array_equal(sw.echo(value=array), array)
