"""The test site as production runs it: PostgreSQL and Redis, several workers.

The database name comes from ``SERVICEWIRE_E2E_DB`` (made and dropped by the
test that starts the servers); the Redis cache is shared by every worker.
"""

import os

from tests.settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "USER": os.environ.get("SERVICEWIRE_TEST_PG_USER", "postgres"),
        "NAME": os.environ.get("SERVICEWIRE_E2E_DB", "test"),
    }
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/0",
        "KEY_PREFIX": os.environ.get("SERVICEWIRE_E2E_DB", "servicewire-e2e"),
    }
}

# The suite presents many revoked, rotated and forged credentials from one
# address within a minute; under the default AUTH_FAILURE_RATE (30/m) the later
# refusals would be 429s, not the 401s the tests check. The failure limit
# itself is attacked in tests/test_throttle.py.
SERVICEWIRE = {**SERVICEWIRE, "AUTH_FAILURE_RATE": "600/m"}  # noqa: F405
