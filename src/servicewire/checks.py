"""Django system checks for unsafe or broken servicewire settings.

``manage.py check`` (and every command that runs checks) reports:

- ``servicewire.E001``: the ``SERVICEWIRE`` setting is invalid.
- ``servicewire.W001``: HTTPS is not required on a site with ``DEBUG`` off.
- ``servicewire.W002``: no URL pattern routes to servicewire.
- ``servicewire.E002``: ``RATE`` or ``AUTH_FAILURE_RATE`` is not a rate.
- ``servicewire.W004``: the default cache cannot count calls (rate limits).
- ``servicewire.W003``: pickle is enabled (``ALLOW_PICKLE``).

Importing this module registers them; ``ServicewireConfig.ready`` does so.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings as django_settings
from django.core import checks
from django.core.checks import CheckMessage, Tags, register
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver, get_resolver

from servicewire.conf import Settings, get_settings
from servicewire.registry import Service
from servicewire.throttle import parse_rate

# Caches whose add/incr are not atomic across processes, or keep nothing.
_UNCOUNTING_CACHES = {
    "django.core.cache.backends.dummy.DummyCache": "keeps nothing, so no limit ever applies",
    "django.core.cache.backends.db.DatabaseCache": "does not increment atomically",
    "django.core.cache.backends.filebased.FileBasedCache": "does not increment atomically",
}

_MOUNT_HINT = 'Add path("services/", include("servicewire.urls")) to your URLconf.'


def _settings_or_none() -> Settings | None:
    try:
        return get_settings()
    except ImproperlyConfigured:
        return None


@register("servicewire")
def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """E001: the ``SERVICEWIRE`` dict has unknown names or values of the wrong type."""
    try:
        get_settings()
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                hint="See servicewire.conf.Settings for the settings and their types.",
                id="servicewire.E001",
            )
        ]
    return []


@register(Tags.security)
def check_https(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W001: a production site (``DEBUG`` off) that accepts calls over plain HTTP."""
    found = _settings_or_none()
    # An invalid SERVICEWIRE is E001's to report; judging it here would only repeat it.
    if found is None or found.REQUIRE_HTTPS or django_settings.DEBUG:
        return []
    return [
        checks.Warning(
            "SERVICEWIRE['REQUIRE_HTTPS'] is off while DEBUG is off: calls and their API "
            "keys may travel in clear text.",
            hint="Remove REQUIRE_HTTPS from SERVICEWIRE (it defaults to on when DEBUG is off) "
            "and serve the site over HTTPS; behind a TLS-terminating proxy, set "
            "SECURE_PROXY_SSL_HEADER so request.is_secure() is true.",
            id="servicewire.W001",
        )
    ]


@register(Tags.security)
def check_pickle(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W003: ``ALLOW_PICKLE`` is on, so flagged clients may send whole Python objects."""
    found = _settings_or_none()
    if found is None or not found.ALLOW_PICKLE:
        return []
    extra = ", ".join(found.PICKLE_ALLOW) or "none"
    return [
        checks.Warning(
            "SERVICEWIRE['ALLOW_PICKLE'] is on: clients flagged allow_pickle may send and "
            "receive pickle (application/x-python-pickle). Unpickling rebuilds objects by "
            "calling the globals a pickle names, so a flagged client's key is as powerful "
            "as the allow-list: the defaults (containers, datetime, decimal, uuid, "
            f"collections, numpy arrays without objects) plus PICKLE_ALLOW ({extra}).",
            hint="Flag only clients you trust with `manage.py servicewire client add NAME "
            "--allow-pickle` (or the admin); keep PICKLE_ALLOW to plain data classes. Every "
            "other caller gets 415 before its body is read, and no pickle may name a global "
            "outside the list, use persistent ids or the copyreg extension registry, or "
            "hold object arrays. Prefer msgpack, which carries the same values without "
            "running anything.",
            id="servicewire.W003",
        )
    ]


@register("servicewire")
def check_rates(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """E002: a rate setting that is not a rate (calls would fail closed with 500)."""
    found = _settings_or_none()
    if found is None:
        return []
    errors: list[CheckMessage] = []
    for name in ("RATE", "AUTH_FAILURE_RATE"):
        text = getattr(found, name)
        if not text.strip():
            continue
        try:
            parse_rate(text)
        except ValueError as exc:
            errors.append(
                checks.Error(
                    f"SERVICEWIRE[{name!r}]: {exc}",
                    hint="Leave it empty for no limit.",
                    id="servicewire.E002",
                )
            )
    return errors


@register(Tags.security)
def check_cache(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W004: rate limits are on but the default cache cannot count calls."""
    found = _settings_or_none()
    if found is None or not (found.RATE.strip() or found.AUTH_FAILURE_RATE.strip()):
        return []
    backend = str(django_settings.CACHES.get("default", {}).get("BACKEND", ""))
    problem = _UNCOUNTING_CACHES.get(backend)
    if problem is None:
        return []
    return [
        checks.Warning(
            f"The default cache ({backend.rsplit('.', 1)[-1]}) {problem}: servicewire's rate "
            "limits, including the limit on failed logins that stops key guessing, "
            "do not hold.",
            hint="Use Redis or Memcached (shared by every worker), or the local-memory "
            "cache for a single process.",
            id="servicewire.W004",
        )
    ]


@register(Tags.urls)
def check_mounted(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W002: servicewire is installed but no URL leads to it, so nothing can be called."""
    try:
        patterns = list(_walk(get_resolver().url_patterns))
    except Exception:
        # A URLconf that fails to load is reported by Django's own URL checks.
        return []
    if any(_routes_to_servicewire(pattern) for pattern in patterns):
        return []
    return [
        checks.Warning(
            "servicewire is installed but no URL pattern routes to it, so no service can "
            "be called.",
            hint=_MOUNT_HINT,
            id="servicewire.W002",
        )
    ]


def _walk(patterns: Sequence[Any]) -> Iterator[URLPattern | URLResolver]:
    for pattern in patterns:
        yield pattern
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns)


def _routes_to_servicewire(pattern: URLPattern | URLResolver) -> bool:
    if isinstance(pattern, URLResolver):
        module = pattern.urlconf_name
        return getattr(module, "__name__", module) == "servicewire.urls"
    callback = pattern.callback
    # A service routed directly as a view, the original pattern, or one of
    # servicewire's views mounted by hand.
    return isinstance(callback, Service) or getattr(callback, "__module__", "") == (
        "servicewire.views"
    )
