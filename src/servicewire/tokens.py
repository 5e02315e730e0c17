"""Short-lived tokens traded for a credential at ``<mount>/_auth/token``.

A token reads ``swt.<payload>.<signature>``: the payload is base64 JSON that
names the client, the key it came from (or the site user, for a user's
login), the scopes it was narrowed to and its expiry in milliseconds; the
signature is Django's HMAC-SHA-256 :class:`~django.core.signing.Signer` under
the site's ``SECRET_KEY`` (and ``SECRET_KEY_FALLBACKS``), salted for
servicewire. The site stores nothing per token, and the payload holds no
secret: reading it tells nothing a key id does not already tell.

A token is only as good as what it came from: every use reads the key from
the database (:func:`servicewire.auth.usable_key`), so revoking or expiring
the key, or disabling the client, stops its tokens on the next call. A token
cannot be traded for another token, so a stolen one dies at its expiry.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from django.contrib.auth import authenticate, get_user_model
from django.core import signing
from django.http import HttpRequest
from django.utils.crypto import salted_hmac

from servicewire import codecs
from servicewire.auth import Caller, usable_key
from servicewire.conf import get_settings
from servicewire.errors import (
    BadRequest,
    Forbidden,
    ServiceError,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
)
from servicewire.models import ClientApp

TOKEN_PREFIX = "swt."  # noqa: S105 - a marker, not a secret
_SALT = "servicewire.tokens"
# Far above any token this module issues; anything longer is not parsed at all.
_MAX_TOKEN_LENGTH = 2048
_USER_FINGERPRINT_SALT = "servicewire.tokens.user"
_LOGIN_FIELDS = frozenset({"username", "password"})
_TOKEN_REQUEST_FIELDS = frozenset({"scopes"})


def _signer() -> signing.Signer:
    # "." keeps the token within RFC 6750's b64token characters (":" is not).
    return signing.Signer(salt=_SALT, sep=".", algorithm="sha256")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _user_fingerprint(user: Any) -> str:
    """A keyed digest of the user's password hash: a new password ends their tokens.

    Keyed with the site's secret and truncated, so it reveals nothing about
    the password hash it is derived from.
    """
    return salted_hmac(_USER_FINGERPRINT_SALT, user.password, algorithm="sha256").hexdigest()[:24]


def looks_like_token(value: str) -> bool:
    """Whether a bearer value is a token rather than an API key."""
    return value.startswith(TOKEN_PREFIX)


def client_for_user(user: Any) -> ClientApp:
    """The client application a site user calls as: the one linked to them.

    Raises Forbidden when no client is linked (an administrator links one in
    the admin) or the linked client is disabled. Clients are never created
    on the fly: being a site user does not by itself grant access to services.
    """
    client = ClientApp.objects.filter(user=user).first()
    if client is None:
        raise Forbidden(
            "no client application is linked to this user; "
            "an administrator links one (ClientApp.user) in the admin"
        )
    if not client.is_active:
        raise Forbidden("the client application linked to this user is disabled")
    return client


def authenticate_token(token: str) -> Caller:
    """The caller a token was issued to; raises Unauthorized otherwise.

    The reasons tell a tampered or foreign token, an expired one, and one
    whose key or user no longer holds, apart: none of them helps a forger.
    """
    if len(token) > _MAX_TOKEN_LENGTH:
        raise Unauthorized("the token is malformed")
    try:
        # Signer.unsign compares signatures in constant time.
        claims = _signer().unsign_object(token[len(TOKEN_PREFIX) :])
    except (signing.BadSignature, ValueError):
        # BadSignature's own text quotes the signature: never pass it on.
        raise Unauthorized(
            "the token is invalid: it was altered or not issued by this site"
        ) from None
    client_id, key_id, user_id, scopes, expires = _claims(claims)
    if _now_ms() >= expires:
        raise Unauthorized("the token has expired; log in again at _auth/token")
    token_scopes = frozenset(scopes) if scopes is not None else None
    if key_id:
        key = usable_key(key_id)
        if key is None or key.client_id != client_id:
            raise Unauthorized(
                "the token's key is no longer valid (revoked, expired or its client disabled)"
            )
        return Caller(
            client=key.client, key_id=key_id, credential="token", token_scopes=token_scopes
        )
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    fingerprint = claims.get("h")
    if (
        user is None
        or not getattr(user, "is_active", True)
        or not isinstance(fingerprint, str)
        or not hmac.compare_digest(fingerprint, _user_fingerprint(user))
    ):
        raise Unauthorized("the token's user is disabled, gone or has a new password")
    client = ClientApp.objects.filter(pk=client_id, user=user, is_active=True).first()
    if client is None:
        raise Unauthorized("the token's client is disabled or no longer linked to its user")
    return Caller(
        client=client, key_id="", credential="token", user=user, token_scopes=token_scopes
    )


def _claims(claims: Any) -> tuple[int, str, Any, list[str] | None, int]:
    """The fields of a token's payload, checked for shape.

    Only a payload signed with the site's key gets here, so a bad shape means
    a token of another format version, not an attack.
    """
    if isinstance(claims, dict):
        client_id, key_id, user_id = claims.get("c"), claims.get("k"), claims.get("u")
        scopes, expires = claims.get("s"), claims.get("e")
        if (
            isinstance(client_id, int)
            and isinstance(key_id, str)
            and isinstance(expires, int)
            and (key_id or user_id is not None)
            and (
                scopes is None
                or (isinstance(scopes, list) and all(isinstance(s, str) for s in scopes))
            )
        ):
            return client_id, key_id, user_id, scopes, expires
    raise Unauthorized("the token is malformed")


def _is_labels(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(s, str) for s in value)


def _requested_scopes(caller: Caller, arguments: dict[str, Any]) -> list[str] | None:
    unexpected = sorted(str(name)[:100] for name in set(arguments) - _TOKEN_REQUEST_FIELDS)
    if unexpected:
        raise ValidationError(
            "a token request takes only 'scopes'", details={"unexpected": unexpected}
        )
    requested = arguments.get("scopes")
    if requested is None:
        return None
    if not _is_labels(requested):
        raise ValidationError(
            "'scopes' must be a list of scope labels", details={"scopes": "not a list of strings"}
        )
    missing = sorted(set(requested) - caller.scopes)
    if missing:
        shown = ", ".join(repr(s[:100]) for s in missing[:20])
        raise Forbidden(
            f"a token cannot carry scopes its client does not hold: {shown}",
            details={"scopes": [s[:100] for s in missing[:20]]},
        )
    return sorted(set(requested))


def issue_token(caller: Caller, arguments: dict[str, Any]) -> dict[str, Any]:
    """A new token for ``caller``: ``{"token": ..., "expires_in": seconds}``.

    ``arguments`` may hold ``scopes``, a list that narrows the token to those
    of the client's scopes (Forbidden for one the client lacks). A token's
    own caller is refused: tokens are not traded for tokens, so no chain of
    them outlives the first. The expiry is ``TOKEN_LIFETIME`` from now, and
    never later than the key's own expiry.
    """
    lifetime_ms = get_settings().TOKEN_LIFETIME * 1000
    if lifetime_ms <= 0:
        raise Forbidden("this site issues no tokens (TOKEN_LIFETIME is 0)")
    if caller.credential == "token":
        raise Forbidden("a token cannot be traded for another token; log in again with the key")
    scopes = _requested_scopes(caller, arguments)
    now = _now_ms()
    expires = now + lifetime_ms
    claims: dict[str, Any] = {"c": caller.client.pk, "k": caller.key_id, "s": scopes}
    if caller.key_id:
        key = usable_key(caller.key_id)
        if key is None:
            # Revoked between the check of the credential and now.
            raise Unauthorized("the credential is invalid, expired or revoked")
        if key.expires is not None:
            expires = min(expires, int(key.expires.timestamp() * 1000))
    elif caller.user is not None:
        claims["u"] = caller.user.pk
        claims["h"] = _user_fingerprint(caller.user)
    else:
        raise Forbidden("this credential cannot be traded for a token")
    claims["e"] = expires
    token = TOKEN_PREFIX + _signer().sign_object(claims)
    return {"token": token, "expires_in": max(0, (expires - now) // 1000)}


def is_password_login(request: HttpRequest) -> bool:
    """Whether a token request offers a username and password, not a credential.

    Only where the site allows it (``ALLOW_PASSWORD_LOGIN``), and only for a
    request with no other credential: no ``Authorization`` header and no
    signature. The view checks that a body is present. A browser session
    that wants a token therefore sends an empty body on such a site.
    """
    from servicewire import signatures

    return (
        get_settings().ALLOW_PASSWORD_LOGIN
        and "Authorization" not in request.headers
        and not signatures.is_signed(request)
    )


def authenticate_password(request: HttpRequest, body: bytes | bytearray) -> Caller:
    """The caller mapped to the site user whose username and password ``body`` holds.

    ``body`` is ``{"username": ..., "password": ...}`` in JSON or msgpack, as
    its ``Content-Type`` says. The password goes through the site's own
    authentication backends (``django.contrib.auth.authenticate``); it is
    never echoed, logged or stored. A wrong one is Unauthorized (the view
    counts it against the caller's address); a user with no linked, active
    client application is Forbidden.
    """
    if not get_settings().ALLOW_PASSWORD_LOGIN:
        raise Unauthorized("password login is not accepted by this site")
    codec = codecs.codec_for_content_type(request.headers.get("Content-Type", ""))
    if codec is None or codec not in (codecs.JSON, codecs.MSGPACK):
        raise UnsupportedMediaType("send the username and password as JSON or msgpack")
    try:
        fields = codec.decode(body, get_settings().limits)
    except ServiceError:
        # The decoder's message may quote the body, and so the password.
        raise BadRequest(f"the login body is not valid {codec.name}") from None
    if not isinstance(fields, dict) or set(fields) != _LOGIN_FIELDS:
        raise ValidationError(
            "a password login takes exactly 'username' and 'password'",
            details={"required": sorted(_LOGIN_FIELDS)},
        )
    username, password = fields["username"], fields["password"]
    if not isinstance(username, str) or not isinstance(password, str):
        raise ValidationError(
            "'username' and 'password' must be strings",
            details={"required": sorted(_LOGIN_FIELDS)},
        )
    user = authenticate(request, username=username, password=password)
    if user is None:
        raise Unauthorized("wrong username or password")
    return Caller(client=client_for_user(user), key_id="", credential="password", user=user)
