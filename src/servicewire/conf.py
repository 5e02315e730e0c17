"""The one accessor for servicewire's settings, with their defaults.

A site configures servicewire with one dict in its Django settings::

    SERVICEWIRE = {
        "REQUIRE_HTTPS": True,
        "HIDE_FROM_UNAUTHENTICATED": True,
        "MAX_BODY_BYTES": 64 * 2**20,
    }

Every other module reads settings through :func:`get_settings`, never from
``django.conf.settings`` directly. The result is cached and rebuilt when
Django's ``setting_changed`` signal fires (as ``override_settings`` does).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from servicewire.codecs import Limits
from servicewire.pickling import parse_allow


@dataclass(frozen=True)
class Settings:
    """servicewire's settings, after defaults are applied.

    Attributes:
        REQUIRE_HTTPS: refuse calls that did not arrive over HTTPS, as judged
            by ``request.is_secure()``. Default: on unless ``DEBUG``.
        HIDE_FROM_UNAUTHENTICATED: answer callers without a valid credential
            with the site's ordinary 404, so the mount looks absent. Default off.
        MAX_BODY_BYTES: largest request body accepted (413 beyond it).
        MAX_DEPTH: deepest nesting of containers accepted in arguments.
        MAX_LENGTH: most items in any one list, tuple, set or dict.
        MAX_INT_BITS: largest integer accepted, in bits.
        MAX_STR_LENGTH: longest string accepted, in characters.
        DISCOVERY: serve ``GET <mount>/`` and ``openapi.json`` to callers.
        KEY_LAST_USED_RESOLUTION: seconds between writes of a key's
            ``last_used`` (each call would otherwise cost a database write).
        ALLOW_PICKLE: let clients flagged ``allow_pickle`` use the pickle
            codec (allow-listed types only; see :mod:`servicewire.pickling`).
            Default off.
        PICKLE_ALLOW: extra ``"module.name"`` globals the unpickler accepts,
            beyond the built-in allow-list (exact pairs; an entry naming
            ``os``, ``subprocess``, ``builtins`` and the like is an error).
        RATE: default rate limit per client, like ``"600/m"``; empty: none.
        AUTH_FAILURE_RATE: failed authentications allowed per remote address.
        TRUSTED_PROXIES: how many reverse proxies in front of the site append
            to ``X-Forwarded-For``; 0 means ``REMOTE_ADDR`` is the caller.
        TOKEN_LIFETIME: seconds a token from ``_auth/token`` stays valid.
        ALLOW_PASSWORD_LOGIN: let ``_auth/token`` accept a site user's
            username and password.
        SIGNATURE_MAX_SKEW: seconds a signature's ``created`` may differ from
            the server's clock, either way; also how long nonces are kept.
        AUDIT: write an audit entry for every request to the mount.
        KEY_CACHE_SECONDS: how long a key's state may be kept in a shared
            cache (Redis, Memcached) between changes; every change forgets it
            at once. 0 turns the key cache off; process-local caches are never
            used for it.
    """

    REQUIRE_HTTPS: bool
    HIDE_FROM_UNAUTHENTICATED: bool = False
    MAX_BODY_BYTES: int = 256 * 2**20
    MAX_DEPTH: int = 64
    MAX_LENGTH: int = 10_000_000
    MAX_INT_BITS: int = 4096
    MAX_STR_LENGTH: int = 64 * 2**20
    DISCOVERY: bool = True
    KEY_LAST_USED_RESOLUTION: int = 60
    ALLOW_PICKLE: bool = False
    PICKLE_ALLOW: tuple[str, ...] = ()
    RATE: str = ""
    AUTH_FAILURE_RATE: str = "30/m"
    TRUSTED_PROXIES: int = 0
    TOKEN_LIFETIME: int = 900
    ALLOW_PASSWORD_LOGIN: bool = False
    SIGNATURE_MAX_SKEW: int = 300
    AUDIT: bool = True
    KEY_CACHE_SECONDS: int = 300

    @cached_property
    def limits(self) -> Limits:
        """The decoding bounds as the codecs take them."""
        return Limits(
            max_body_bytes=self.MAX_BODY_BYTES,
            max_depth=self.MAX_DEPTH,
            max_length=self.MAX_LENGTH,
            max_int_bits=self.MAX_INT_BITS,
            max_str_length=self.MAX_STR_LENGTH,
        )


_cache: dict[str, Settings] = {}

SETTING_NAMES = frozenset(f.name for f in dataclasses.fields(Settings))

_TYPES: dict[str, type] = {
    "REQUIRE_HTTPS": bool,
    "HIDE_FROM_UNAUTHENTICATED": bool,
    "DISCOVERY": bool,
    "ALLOW_PICKLE": bool,
    "ALLOW_PASSWORD_LOGIN": bool,
    "AUDIT": bool,
    "PICKLE_ALLOW": tuple,
    "RATE": str,
    "AUTH_FAILURE_RATE": str,
}


def get_settings() -> Settings:
    """The site's servicewire settings, defaults applied, cached until changed."""
    found = _cache.get("settings")
    if found is None:
        found = _build()
        _cache["settings"] = found
    return found


def _build() -> Settings:
    raw: Any = getattr(django_settings, "SERVICEWIRE", {}) or {}
    if not isinstance(raw, dict):
        raise ImproperlyConfigured("SERVICEWIRE must be a dict of servicewire settings.")
    unknown = sorted(set(raw) - SETTING_NAMES)
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown SERVICEWIRE setting(s): {', '.join(unknown)}. "
            f"Known: {', '.join(sorted(SETTING_NAMES))}."
        )
    values = dict(raw)
    if isinstance(values.get("PICKLE_ALLOW"), list):
        values["PICKLE_ALLOW"] = tuple(values["PICKLE_ALLOW"])
    values.setdefault("REQUIRE_HTTPS", not django_settings.DEBUG)
    for name, value in values.items():
        expected = _TYPES.get(name, int)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ImproperlyConfigured(
                f"SERVICEWIRE[{name!r}] must be {expected.__name__}, not {type(value).__name__}."
            )
        if isinstance(value, int) and value < 0:
            raise ImproperlyConfigured(f"SERVICEWIRE[{name!r}] must not be negative.")
    try:
        parse_allow(values.get("PICKLE_ALLOW", ()))
    except ValueError as exc:
        raise ImproperlyConfigured(f"SERVICEWIRE['PICKLE_ALLOW']: {exc}.") from None
    return Settings(**values)


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in ("SERVICEWIRE", "DEBUG"):
        _cache.clear()


setting_changed.connect(_reset)
