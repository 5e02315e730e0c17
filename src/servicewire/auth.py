"""Who is calling: API keys, their issue and their check.

A key reads ``sw_<key_id>_<secret>``. The key id (12 characters) is public and
names the key; the secret (43 characters of ``[A-Za-z0-9]``, 256 bits of
entropy) is shown once and stored only as an HMAC-SHA-256 keyed with the
site's ``SECRET_KEY``. A password hasher would cost milliseconds per call and
buys nothing against a 256-bit random secret; the key on the hash means a
stolen table cannot even be checked offline without the site's secret.
"""

from __future__ import annotations

import hmac
import re
import secrets
import string
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings as django_settings
from django.db.models import DEFERRED, Model
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import salted_hmac

from servicewire import keycache
from servicewire.conf import get_settings
from servicewire.errors import Unauthorized
from servicewire.models import ApiKey, ClientApp

if TYPE_CHECKING:
    from servicewire.throttle import AddressLimit

_ALPHABET = string.ascii_letters + string.digits
KEY_ID_LENGTH = 12
# 62**43 > 2**256: the secret carries at least 256 bits of entropy.
SECRET_LENGTH = 43
_KEY_RE = re.compile(
    rf"^sw_(?P<key_id>[A-Za-z0-9]{{{KEY_ID_LENGTH}}})_(?P<secret>[A-Za-z0-9]{{{SECRET_LENGTH}}})$"
)
_HASH_SALT = "servicewire.auth.api-key"
# What the key look-up learnt about each key's recent use, for note_use().
_recently_used: weakref.WeakKeyDictionary[ApiKey, bool] = weakref.WeakKeyDictionary()
INVALID_CREDENTIAL = "the credential is invalid, expired or revoked"
# Compared against when the key id is unknown, so that an unknown id and a
# wrong secret cost the same time and get the same answer.
_DUMMY_HASH = "0" * 64


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the client application and how it proved it.

    ``credential`` is ``"key"``, ``"token"``, ``"signature"`` or ``"session"``;
    ``key_id`` names the key behind the credential (empty for a session).
    ``token_scopes`` narrows the client's scopes for a token that asked for
    fewer. ``check_body`` verifies the body once it is read (a signed
    request's ``Content-Digest``); it raises ``Unauthorized`` on a mismatch.
    """

    client: ClientApp
    key_id: str
    credential: str = "key"
    user: Any = None
    token_scopes: frozenset[str] | None = None
    check_body: Callable[[bytes | bytearray | memoryview], None] | None = None

    @property
    def scopes(self) -> frozenset[str]:
        """The scopes this caller holds now: the client's, narrowed by a token."""
        granted = self.client.scope_set
        return granted if self.token_scopes is None else granted & self.token_scopes

    def may_call(self, required_scopes: frozenset[str]) -> bool:
        """Whether this caller holds one of ``required_scopes`` (none: open)."""
        return not required_scopes or bool(required_scopes & self.scopes)

    def has_permissions(self, permissions: frozenset[str]) -> bool:
        """Whether the Django user behind this caller holds every permission.

        A key's caller acts as its client's linked user, if any; a caller with
        no user holds no permission.
        """
        if not permissions:
            return True
        user = self.user if self.user is not None else self.client.user
        return user is not None and user.is_active and bool(user.has_perms(permissions))


def _random_string(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def hash_secret(secret: str, *, signing_key: str | None = None) -> str:
    """The stored form of a key's secret: HMAC-SHA-256 under the site's key."""
    key = signing_key if signing_key is not None else django_settings.SECRET_KEY
    return salted_hmac(_HASH_SALT, secret, secret=key, algorithm="sha256").hexdigest()


def _secret_matches(secret: str, stored_hash: str) -> bool:
    # SECRET_KEY_FALLBACKS keep keys working while the site rotates SECRET_KEY.
    matched = False
    keys = [django_settings.SECRET_KEY, *getattr(django_settings, "SECRET_KEY_FALLBACKS", [])]
    for signing_key in keys:
        # Constant-time comparison: the hash must not leak through timing.
        if hmac.compare_digest(hash_secret(secret, signing_key=signing_key), stored_hash):
            matched = True
    return matched


def new_key_id() -> str:
    """A fresh public key id that no stored key has."""
    while True:
        key_id = _random_string(KEY_ID_LENGTH)
        if not ApiKey.objects.filter(key_id=key_id).exists():
            return key_id


def issue_key(client: ClientApp, *, expires: datetime | None = None) -> tuple[ApiKey, str]:
    """Create a new key for ``client``; returns the stored key and the plain key.

    The plain key is not kept anywhere: show it to its owner once.

    Example::

        key, plain = issue_key(ClientApp.objects.get(name="desktop"))
        print(plain)   # sw_AbC123dEf456_...
    """
    key_id = new_key_id()
    secret = _random_string(SECRET_LENGTH)
    key = ApiKey.objects.create(
        client=client, key_id=key_id, secret_hash=hash_secret(secret), expires=expires
    )
    return key, f"sw_{key_id}_{secret}"


def parse_duration(text: str) -> timedelta:
    """Read ``90d``, ``12h``, ``30m`` or ``45s`` as a timedelta.

    Raises ValueError with a message fit for a user on anything else.
    """
    match = re.fullmatch(r"\s*(\d{1,9})\s*([dhms])\s*", text or "")
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90d, 12h, 30m or 45s)")
    amount, unit = int(match[1]), match[2]
    seconds = {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return timedelta(seconds=amount * seconds)


def bearer_key(request: HttpRequest) -> str | None:
    """The key from ``Authorization: Bearer <key>``, or None if absent."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate(request: HttpRequest, limit: AddressLimit | None = None) -> Caller | None:
    """The caller a request proves to be; None when it presents no credential.

    Raises Unauthorized, with a reason fit to send back, when it presents a
    credential that proves nothing. A missing, unknown, wrong, revoked or
    expired key, or a disabled client, all get the same reason.

    ``limit`` (the address's failed logins) is checked before any credential
    is; for a key it is read in the same cache round trip as the key's state.
    """
    from servicewire import sessions, signatures, tokens

    if signatures.is_signed(request):
        _check(limit)
        return signatures.authenticate_signature(request)
    plain = bearer_key(request)
    if plain is None:
        _check(limit)
        return sessions.authenticate_session(request)
    if tokens.looks_like_token(plain):
        _check(limit)
        return tokens.authenticate_token(plain)
    return authenticate_key(plain, limit)


def _check(limit: AddressLimit | None) -> None:
    if limit is not None:
        limit.check()


def authenticate_key(plain: str, limit: AddressLimit | None = None) -> Caller:
    """The caller behind a plain bearer key; raises Unauthorized otherwise.

    ``limit`` is checked first, as in :func:`authenticate`.
    """
    match = _KEY_RE.match(plain)
    if match is None:
        _check(limit)
        raise Unauthorized(INVALID_CREDENTIAL)
    key = usable_key(match["key_id"], limit)
    stored = key.secret_hash if key is not None and key.secret_hash else _DUMMY_HASH
    if not _secret_matches(match["secret"], stored) or key is None:
        raise Unauthorized(INVALID_CREDENTIAL)
    note_use(key, timezone.now())
    return Caller(client=key.client, key_id=key.key_id, credential="key")


def usable_key(key_id: str, limit: AddressLimit | None = None) -> ApiKey | None:
    """The key with this id if it may authenticate right now, else None.

    From the shared cache when it holds the key's current state (every change
    of a key or its client invalidates it there), else from the database.
    ``limit`` is checked (RateLimited) before anything else is decided; its
    counter comes with the key's state, in the same round trip.
    """
    lookup = keycache.load(key_id, limit.names if limit is not None else ())
    if limit is not None:
        limit.check(lookup.also)
    if lookup.state is not None:
        key: ApiKey | None = _key_from_state(lookup.state)
    else:
        generation = keycache.current_generation(key_id, lookup.generation)
        key = ApiKey.objects.select_related("client").filter(key_id=key_id).first()
        if key is not None:
            keycache.store(key, generation)
    if key is None or not key.is_usable(timezone.now()):
        return None
    _recently_used[key] = lookup.used_recently
    return key


_M = TypeVar("_M", bound=Model)
# Each cached model's fields in the order of its positional arguments.
_ATTNAMES: dict[type[Model], tuple[str, ...]] = {
    model: tuple(f.attname for f in model._meta.concrete_fields) for model in (ApiKey, ClientApp)
}


def _key_from_state(state: dict[str, Any]) -> ApiKey:
    client = _instance(ClientApp, state["client"])
    key = _instance(ApiKey, state["key"], client_id=client.pk)
    key.client = client
    return key


def _instance(model: type[_M], state: dict[str, Any], **more: Any) -> _M:
    """A model instance from cached field values, the others deferred.

    Built from positional values, as Django builds rows read from the database:
    keyword arguments cost twice as much, and a call builds two instances.
    """
    values = {model._meta.pk.attname: state["pk"], **state, **more}
    return model(*[values.get(name, DEFERRED) for name in _ATTNAMES[model]])


def note_use(key: ApiKey, now: datetime) -> None:
    """Record that ``key`` was just used, at most once per resolution period.

    A write per call would double the database work of a small call; with a
    shared cache the period is counted across every worker.
    """
    resolution = get_settings().KEY_LAST_USED_RESOLUTION
    if keycache.enabled():
        # The look-up already asked the cache; only a key not noted in this
        # period costs another round trip, to claim the write for one worker.
        due = not _recently_used.get(key, False) and keycache.first_use_in(key.key_id, resolution)
    else:
        due = key.last_used is None or now - key.last_used >= timedelta(seconds=resolution)
    if due:
        # last_used is no part of what authorises a call: the cached state
        # stays valid, so this write goes around the invalidating update().
        ApiKey.objects.filter(pk=key.pk).record_use(now)
        key.last_used = now
