"""Shared fixtures: credentials, a live server, and the production services.

When the suite runs against PostgreSQL (``SERVICEWIRE_TEST_DATABASE=postgres``)
or a test is marked ``production``, the servers must be reachable. A user's
plain run skips such tests with the reason shown; under ``CI=true`` (or
``SERVICEWIRE_REQUIRE_SERVICES=1``) an absent server fails the run instead.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

# The browser_context fixture, for the tests of pages.
pytest_plugins = ["tests.browser"]

PG_ADDR = (os.environ.get("SERVICEWIRE_TEST_PG_HOST", "127.0.0.1"), 5432)
REDIS_ADDR = ("127.0.0.1", 6379)


def _reachable(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=1.0):
            return True
    except OSError:
        return False


def services_required() -> bool:
    """Whether absent PostgreSQL/Redis must fail the run rather than skip."""
    return os.environ.get("CI", "").lower() == "true" or bool(
        os.environ.get("SERVICEWIRE_REQUIRE_SERVICES")
    )


def missing_services(*, redis: bool) -> list[str]:
    """Which of the production servers cannot be reached on 127.0.0.1."""
    missing = []
    if not _reachable(PG_ADDR):
        missing.append(f"PostgreSQL at {PG_ADDR[0]}:{PG_ADDR[1]}")
    if redis and not _reachable(REDIS_ADDR):
        missing.append(f"Redis at {REDIS_ADDR[0]}:{REDIS_ADDR[1]}")
    return missing


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_postgres = os.environ.get("SERVICEWIRE_TEST_DATABASE") == "postgres"
    needs_redis = any(item.get_closest_marker("production") for item in items)
    if not on_postgres and not needs_redis:
        return
    missing = missing_services(redis=needs_redis)
    if not missing:
        return
    reason = f"not reachable: {', '.join(missing)}"
    if services_required():
        raise pytest.UsageError(f"CI requires the production servers, but {reason}")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if on_postgres or item.get_closest_marker("production"):
            item.add_marker(skip)


def authenticate(request: Any) -> Any:
    """The caller a request proves to be, or None where its credential proves
    nothing or it has none (``auth.authenticate`` raises Unauthorized then)."""
    from servicewire import auth
    from servicewire.errors import Unauthorized

    try:
        return auth.authenticate(request)
    except Unauthorized:
        return None


@pytest.fixture
def make_key(db: None) -> Callable[..., str]:
    """Make a client with the given scopes and return a fresh plain key."""
    from servicewire.auth import issue_key
    from servicewire.models import ClientApp

    counter = iter(range(1_000_000))

    def make(name: str | None = None, scopes: list[str] | None = None) -> str:
        client, _ = ClientApp.objects.get_or_create(
            name=name or f"client-{next(counter)}", defaults={"scopes": scopes or []}
        )
        return issue_key(client)[1]

    return make


@pytest.fixture
def key(make_key: Callable[..., str]) -> str:
    """A valid key of a client with no scopes."""
    return make_key("desktop")


@pytest.fixture
def auth(key: str) -> dict[str, str]:
    """Headers for Django's test client that authenticate with ``key``."""
    return {"Authorization": f"Bearer {key}"}
