"""Signed requests (HTTP Message Signatures, RFC 9421) -> the calling client.

A signed request carries one signature (``Signature-Input``/``Signature``)
covering at least ``@method``, ``@target-uri``, ``@authority`` and
``content-digest``, with the parameters ``created``, ``keyid`` and ``nonce``.
The checks, cheapest first and each with its own reason:

1. the headers parse, and carry exactly one signature;
2. the covered components and the parameters are all there and well formed;
3. ``created`` lies within ``SIGNATURE_MAX_SKEW`` of the server's clock,
   either way (http-message-signatures' own default age is a day);
4. the key id names a usable signing key (read from the database on every
   request, like a bearer key: revocation is effective on the next call);
5. the signature verifies (http-message-signatures with that key only, so a
   key id naming another client's key cannot verify);
6. the nonce was not seen before: recorded with an atomic ``cache.add`` only
   now, so that forged requests cannot fill the cache or burn real nonces;
7. once the view has read the body, its digest matches ``Content-Digest``
   (:attr:`Caller.check_body`).

Malformed input of any kind is a 401 with a reason, never a 500.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import http_sf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.cache import cache
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.utils import timezone
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver
from http_message_signatures.algorithms import ED25519

from servicewire.auth import Caller, new_key_id, note_use, usable_key
from servicewire.conf import get_settings
from servicewire.errors import Unauthorized
from servicewire.models import ApiKey, ClientApp
from servicewire.signing import (
    ALGORITHM,
    COVERED_COMPONENTS,
    DIGEST_ALGORITHMS,
    load_public_key,
    public_key_text,
)

logger = logging.getLogger("servicewire")

_KEY_ID_RE = re.compile(r"[A-Za-z0-9]{1,32}")
# At least 22 base64 characters (128 bits); a bounded, safe alphabet keeps the
# cache key valid for every backend (memcached: no spaces, 250 bytes at most).
_NONCE_RE = re.compile(r"[A-Za-z0-9._~+/=-]{22,128}")
# Generous for any honest client, small enough to parse in microseconds.
_MAX_HEADER_LENGTH = 4096
_NO_KEY = "the signature's key id names no usable signing key (unknown, expired or revoked)"


@dataclass
class _Message:
    """The request as http-message-signatures reads it."""

    method: str
    url: str
    headers: Any


@dataclass(frozen=True)
class _SignatureInput:
    key_id: str
    nonce: str
    created: int


def is_signed(request: HttpRequest) -> bool:
    """Whether the request carries a message signature at all."""
    return "Signature" in request.headers or "Signature-Input" in request.headers


def authenticate_signature(request: HttpRequest) -> Caller:
    """The caller whose key signed the request; raises Unauthorized otherwise.

    The returned caller's ``check_body`` must be called with the body once it
    is read: until then the body is not proven.
    """
    skew = get_settings().SIGNATURE_MAX_SKEW
    now = time.time()
    signed = _read_signature_input(request)
    age = now - signed.created
    if abs(age) > skew:
        when = f"{age:.0f} s ago" if age > 0 else f"{-age:.0f} s in the future"
        raise Unauthorized(
            f"the signature was created {when}; this site accepts at most {skew} s of "
            "difference from its clock (is the client's clock right?)"
        )
    digests = _parse_content_digest(request.headers.get("Content-Digest", ""))
    key = usable_key(signed.key_id)
    if key is None or not key.public_key:
        raise Unauthorized(_NO_KEY)
    _verify(request, key, skew)
    # Only a verified signature may spend its nonce. The window is both sides
    # of the skew: a request created at t is accepted from t - skew to t + skew.
    nonce_key = f"servicewire:signature-nonce:{key.key_id}:{signed.nonce}"
    if not cache.add(nonce_key, 1, timeout=2 * skew + 1):
        raise Unauthorized("this signature's nonce was already used: a replayed request")
    note_use(key, timezone.now())
    return Caller(
        client=key.client,
        key_id=key.key_id,
        credential="signature",
        check_body=partial(_check_body, digests),
    )


def _headers(request: HttpRequest) -> tuple[str, str]:
    sig_input = request.headers.get("Signature-Input")
    signature = request.headers.get("Signature")
    if not sig_input or not signature:
        raise Unauthorized("a signed request needs both Signature-Input and Signature headers")
    if len(sig_input) > _MAX_HEADER_LENGTH or len(signature) > _MAX_HEADER_LENGTH:
        raise Unauthorized("the signature headers are too long")
    return sig_input, signature


def _dictionary(value: str, header: str) -> dict[str, Any]:
    """A Structured Field Dictionary header: member name -> (value, parameters).

    A member named twice (perhaps in two header lines) is refused rather than
    letting the last one win: the parse must not differ from the verifier's.
    """

    def refuse_duplicate(name: str, context: str) -> None:
        if context == "dictionary":
            raise Unauthorized(f"the {header} header names {name[:40]!r} twice")

    try:
        parsed = http_sf.parse(
            value.encode("latin-1"), tltype="dictionary", on_duplicate_key=refuse_duplicate
        )
    except (ValueError, UnicodeError, http_sf.StructuredFieldError):
        raise Unauthorized(f"malformed {header} header") from None
    if not isinstance(parsed, dict):
        raise Unauthorized(f"malformed {header} header")
    return parsed


def _read_signature_input(request: HttpRequest) -> _SignatureInput:
    """The one signature's parameters, each present and well formed."""
    sig_input, signature = _headers(request)
    inputs = _dictionary(sig_input, "Signature-Input")
    signatures = _dictionary(signature, "Signature")
    if len(inputs) != 1 or inputs.keys() != signatures.keys():
        raise Unauthorized("send exactly one signature, with the same label in both headers")
    ((members, params),) = inputs.values()
    ((value, value_params),) = signatures.values()
    if not isinstance(value, bytes) or value_params:
        # Parameters here are covered by nothing: refused, not ignored.
        raise Unauthorized("the Signature header must hold a byte sequence, with no parameters")
    if not isinstance(members, list) or not isinstance(params, dict):
        raise Unauthorized("Signature-Input must be a list of covered components")
    covered = {item for item, item_params in members if isinstance(item, str) and not item_params}
    missing = [name for name in COVERED_COMPONENTS if name not in covered]
    if missing:
        raise Unauthorized(
            "the signature must cover "
            + ", ".join(COVERED_COMPONENTS)
            + "; it misses "
            + ", ".join(missing)
        )
    created = params.get("created")
    if type(created) is not int:
        raise Unauthorized("the signature needs a 'created' parameter: an integer time")
    key_id = params.get("keyid")
    if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
        raise Unauthorized("the signature needs a 'keyid' parameter: the key's id")
    nonce = params.get("nonce")
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise Unauthorized(
            "the signature needs a 'nonce' parameter: at least 22 random base64 "
            "characters (128 bits), new for every request"
        )
    alg = params.get("alg", ALGORITHM)
    if alg != ALGORITHM:
        raise Unauthorized(f"this site accepts only alg={ALGORITHM!r} signatures")
    return _SignatureInput(key_id=key_id, nonce=nonce, created=created)


def _parse_content_digest(value: str) -> dict[str, bytes]:
    """The digests ``Content-Digest`` claims, by algorithm."""
    if not value:
        raise Unauthorized("a signed request needs a Content-Digest header")
    if len(value) > _MAX_HEADER_LENGTH:
        raise Unauthorized("the Content-Digest header is too long")
    digests: dict[str, bytes] = {}
    for algorithm, (digest, _) in _dictionary(value, "Content-Digest").items():
        hasher = DIGEST_ALGORITHMS.get(algorithm)
        if hasher is None or not isinstance(digest, bytes):
            raise Unauthorized(
                "Content-Digest must hold sha-256 or sha-512 digests as byte sequences"
            )
        if len(digest) != hasher().digest_size:
            raise Unauthorized(f"the {algorithm} digest in Content-Digest has the wrong length")
        digests[algorithm] = digest
    if not digests:
        raise Unauthorized("Content-Digest holds no digest")
    return digests


def _check_body(digests: dict[str, bytes], body: bytes | bytearray | memoryview) -> None:
    """Raise Unauthorized unless ``body`` has every digest the request claimed."""
    for algorithm, claimed in digests.items():
        # Constant-time, though a digest is no secret: it costs nothing here.
        if not hmac.compare_digest(DIGEST_ALGORITHMS[algorithm](body).digest(), claimed):
            raise Unauthorized("the body does not match its Content-Digest")


def _public_key(key: ApiKey) -> Ed25519PublicKey:
    try:
        return load_public_key(key.public_key)
    except ValueError:
        # Stored through key create, which validates: this is a damaged row.
        logger.error("signing key %s has an unreadable public key", key.key_id)
        raise Unauthorized(_NO_KEY) from None


def _verify(request: HttpRequest, key: ApiKey, skew: int) -> None:
    """Check the signature cryptographically, with ``key`` and nothing else."""
    try:
        # The URL as the server was reached; behind a proxy, Django's
        # SECURE_PROXY_SSL_HEADER and USE_X_FORWARDED_HOST must say how.
        url = request.build_absolute_uri()
    except DisallowedHost:
        raise Unauthorized("the request's Host is not one this site serves") from None
    verifier = HTTPMessageVerifier(
        signature_algorithm=ED25519,
        key_resolver=MappingKeyResolver(
            public_keys={key.key_id: _public_key(key)}, private_keys={}
        ),
    )
    # Belt and braces: the skew was checked already, with a clearer reason.
    verifier.max_clock_skew = timedelta(seconds=skew)
    try:
        verifier.verify(
            _Message(str(request.method), url, request.headers),
            max_age=timedelta(0),
            require_components=COVERED_COMPONENTS,
        )
    except Exception as exc:
        # The library's own exceptions, and anything odd input provokes in it:
        # never a 500. Its message names components, never key or signature.
        detail = str(exc)[:200] or "the signature does not match the request or the key"
        raise Unauthorized(f"bad signature: {detail}") from None


def register_public_key(
    client: ClientApp, public_key: str, *, expires: datetime | None = None
) -> ApiKey:
    """Register an ed25519 public key as a new signing key of ``client``.

    ``public_key`` is any form :func:`servicewire.signing.load_public_key`
    reads; it is stored in its one-line ``ed25519:`` form, with no secret hash,
    so it can never pass as a bearer key. Raises ``ValueError`` for garbage.

    Example::

        key = register_public_key(client, "ed25519:Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=")
        print(key.key_id)
    """
    text = public_key_text(load_public_key(public_key))
    return ApiKey.objects.create(
        client=client, key_id=new_key_id(), secret_hash="", public_key=text, expires=expires
    )
