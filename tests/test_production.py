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

import numpy as np
import pytest

from servicewire import Client
from servicewire.errors import Unauthorized

pytestmark = pytest.mark.production

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 3


@dataclass
class Site:
    url: str
    env: dict[str, str]

    def manage(self, *args: str) -> str:
        """Run ``manage.py servicewire ...`` in its own process; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "django", "servicewire", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin_connection() -> object:
    import psycopg

    return psycopg.connect(
        host="127.0.0.1", port=5432, user="postgres", dbname="test", autocommit=True
    )


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"gunicorn did not listen on port {port} within {timeout} s")


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
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
        port = _free_port()
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
            ],
            env=env,
            cwd=ROOT,
        )
        _wait_for_port(port, process, timeout=60)
        yield Site(url=f"http://127.0.0.1:{port}/services/", env=env)
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
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
