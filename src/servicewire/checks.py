"""Django system checks for unsafe or broken servicewire settings.

``manage.py check`` (and every command that runs checks) reports:

- ``servicewire.E001``: the ``SERVICEWIRE`` setting is invalid.
- ``servicewire.W001``: HTTPS is not required on a site with ``DEBUG`` off.
- ``servicewire.W002``: no URL pattern routes to servicewire.

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
