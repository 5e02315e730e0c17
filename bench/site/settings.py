"""Settings of the bench site.

The database comes from the environment that ``bench.servers`` sets:
``BENCH_DB=postgres`` (a fresh database ``BENCH_PG_NAME`` on 127.0.0.1:5432,
made and dropped by the bench) or ``sqlite`` (the file ``BENCH_SQLITE`` in a
temporary folder, in WAL mode so that two workers can write audit entries at
once). Connections persist (``CONN_MAX_AGE``) as in any production site:
without it every call would pay a new database connection.
"""

import os

SECRET_KEY = "bench-only-secret-key-not-for-production"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "modernrpc",
    "servicewire",
    "bench.site",
]

# The least a real site has; no sessions or CSRF, since no peer uses them.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "bench.site.urls"
WSGI_APPLICATION = "bench.site.wsgi.application"

if os.environ.get("BENCH_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "USER": os.environ.get("BENCH_PG_USER", "postgres"),
            "NAME": os.environ.get("BENCH_PG_NAME", "servicewire_bench"),
            "CONN_MAX_AGE": 600,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BENCH_SQLITE", "bench.sqlite3"),
            "CONN_MAX_AGE": 600,
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }

if os.environ.get("BENCH_REDIS"):
    # As deployed: one cache shared by both workers (nonces, rate counters and
    # servicewire's key cache need it).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
            "KEY_PREFIX": os.environ.get("BENCH_PG_NAME", "bench"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Every peer reads bodies of up to 1 GB (W5).
DATA_UPLOAD_MAX_MEMORY_SIZE = None

# servicewire in its real configuration: bearer keys and the audit trail.
# Plain HTTP because the bench runs on loopback.
SERVICEWIRE = {"REQUIRE_HTTPS": False, "MAX_BODY_BYTES": 2**31, "AUDIT": True}
SILENCED_SYSTEM_CHECKS = ["servicewire.W001"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING"},
}
