"""Settings of the demo site: one process, SQLite and the local-memory cache.

Everything the site writes goes to the folder named by ``SERVICEWIRE_DEMO_DIR``,
which :mod:`servicewire.demo.run` creates for one run and removes afterwards.
"""

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

try:
    DEMO_DIR = Path(os.environ["SERVICEWIRE_DEMO_DIR"])
except KeyError:
    # No silent default: the demo must never write into a folder it does not own.
    raise ImproperlyConfigured(
        "SERVICEWIRE_DEMO_DIR must name the demo's temporary folder; "
        "run the demo with `servicewire demo`"
    ) from None

# The database lives for one run only, so a fresh secret per start is enough,
# and no secret is written down anywhere.
SECRET_KEY = secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "servicewire",
    "servicewire.demo",
]
# Services authenticate with API keys, not sessions or cookies.
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "servicewire.demo.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DEMO_DIR / "demo.sqlite3"),
    }
}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SERVICEWIRE = {
    # The demo server listens on 127.0.0.1 only (see servicewire.demo.serve),
    # so calls never leave the machine; that is the one reason plain HTTP is
    # acceptable here. A real site keeps the default and serves HTTPS.
    "REQUIRE_HTTPS": False,
    # The demo sends a 100 MB float64 array; msgpack framing adds a few dozen
    # bytes, and the margin leaves room to try bigger arrays.
    "MAX_BODY_BYTES": 256 * 2**20,
}
