"""Settings of the test site.

The database is SQLite unless ``SERVICEWIRE_TEST_DATABASE=postgres``, in which
case it is the PostgreSQL server on 127.0.0.1:5432 (user ``postgres``,
database ``test``, or what ``SERVICEWIRE_TEST_PG_*`` say).
"""

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
# Memory-backed where the system has it: the tests' database need not survive them.
_TEST_DIR = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())

SECRET_KEY = "test-only-secret-key-not-for-production"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "servicewire",
    "tests.testapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES: dict[str, dict[str, object]]
if os.environ.get("SERVICEWIRE_TEST_DATABASE") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("SERVICEWIRE_TEST_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("SERVICEWIRE_TEST_PG_PORT", "5432"),
            "USER": os.environ.get("SERVICEWIRE_TEST_PG_USER", "postgres"),
            "NAME": os.environ.get("SERVICEWIRE_TEST_PG_NAME", "test"),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(BASE_DIR / "test.sqlite3"),
            # Tests run on a test database of their own, in a file rather than
            # Django's default in-memory one: that one is shared between
            # threads in SQLite's shared-cache mode, where a request reading a
            # table while another writes it fails at once ("database table is
            # locked") instead of waiting, as every file database does. Each
            # run, and each concurrent run, has its own file.
            "TEST": {"NAME": str(_TEST_DIR / f"servicewire-test-{os.getpid()}.sqlite3")},
            "OPTIONS": {"init_command": "PRAGMA synchronous = OFF"},
        }
    }

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The test server runs on plain HTTP on 127.0.0.1; HTTPS enforcement has tests
# of its own that turn it back on.
SERVICEWIRE = {"REQUIRE_HTTPS": False}
SILENCED_SYSTEM_CHECKS = ["servicewire.W001"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"servicewire": {"level": "INFO"}},
}
