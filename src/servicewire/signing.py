"""ed25519 request signing (RFC 9421 with an RFC 9530 ``Content-Digest``).

The client half: key files and :class:`SignatureAuth`. No Django here. A
client holding a private key proves itself by signing each request; the site
stores only the public key, so nothing on the server can be stolen and
replayed as a credential.

Typical use::

    servicewire keygen ~/.config/servicewire/key.pem     # prints the public key
    # the site operator: manage.py servicewire key create NAME --public-key 'ed25519:...'
    Client(url, key_id="AbC123dEf456", signing_key="~/.config/servicewire/key.pem")

``cryptography`` and ``http-message-signatures`` are the ``signing`` extra,
imported only when a key is used: a program that never signs does not need them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import tempfile
import time
import warnings
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "ALGORITHM",
    "COVERED_COMPONENTS",
    "PUBLIC_KEY_PREFIX",
    "SignatureAuth",
    "content_digest",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "public_key_text",
    "write_private_key",
]

ALGORITHM = "ed25519"
# What every signature covers; the server refuses a signature missing any.
COVERED_COMPONENTS = ("@method", "@target-uri", "@authority", "content-digest")
# The text form of a public key: one line, so ``keygen`` can print it last.
PUBLIC_KEY_PREFIX = "ed25519:"
SIGNATURE_LABEL = "sw"
# 24 random bytes: 192 bits, comfortably above the 128 the server requires.
_NONCE_BYTES = 24
DIGEST_ALGORITHMS: dict[str, Callable[..., Any]] = {
    "sha-256": hashlib.sha256,
    "sha-512": hashlib.sha512,
}
_RAW_KEY_RE = re.compile(r"[A-Za-z0-9+/_-]{43}=?")
_EXTRA_HINT = "request signing needs the 'signing' extra: pip install 'servicewire[signing]'"


def _require_crypto() -> None:
    try:
        import cryptography  # noqa: F401
        import http_message_signatures  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{_EXTRA_HINT} ({exc})") from exc


def generate_private_key() -> Ed25519PrivateKey:
    """A new random ed25519 private key."""
    _require_crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def _pem(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private_key(
    path: str | os.PathLike[str], key: Ed25519PrivateKey, *, force: bool = False
) -> None:
    """Write ``key`` as a PKCS#8 PEM file readable by its owner only (0600).

    Refuses (``FileExistsError``) to replace an existing file unless ``force``;
    a forced write goes through a new 0600 file renamed over the old one, so
    the key is never written into a file others can read, and a symlink at
    ``path`` is replaced, not followed.
    """
    data = _pem(key)
    target = os.fspath(path)
    if force:
        directory = os.path.dirname(os.path.abspath(target))
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".servicewire-key-")
        try:
            _write_all(fd, data)
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
        return
    # O_EXCL refuses an existing file (and any symlink) atomically: no race
    # between a check and the write.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _write_all(fd, data)
    except BaseException:
        os.unlink(target)
        raise


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as file:
        # The umask can only narrow 0o600; set it exactly all the same.
        if hasattr(os, "fchmod"):
            os.fchmod(file.fileno(), 0o600)
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def load_private_key(value: str | os.PathLike[str] | Ed25519PrivateKey) -> Ed25519PrivateKey:
    """The private key in ``value``: a key file's path, a PEM text, or raw base64.

    Raw base64 is the 32-byte key seed, handy in an environment variable. A
    ``ValueError`` never quotes ``value``: it may be the key itself.
    """
    _require_crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if isinstance(value, Ed25519PrivateKey):
        return value
    text = os.fspath(value)
    if text.lstrip().startswith("-----BEGIN"):
        return _private_from_pem(text.encode("ascii", "replace"), "the signing key")
    if _RAW_KEY_RE.fullmatch(text.strip()) and not os.path.exists(text):
        return Ed25519PrivateKey.from_private_bytes(_b64(text.strip(), "the signing key"))
    path = os.path.expanduser(text)
    try:
        with open(path, "rb") as file:
            data = file.read(64 * 1024)
            mode = os.fstat(file.fileno()).st_mode
    except OSError as exc:
        raise ValueError(
            "the signing key is neither a readable key file "
            f"({exc.strerror or type(exc).__name__}) nor a PEM or base64 ed25519 "
            "private key (the value is not shown: it may be a key)"
        ) from None
    if os.name == "posix" and mode & 0o077:
        # Not refused (mounted secrets are often 0644), but worth a word.
        warnings.warn(
            f"the signing key file {path} is readable by other users; chmod 600 it",
            stacklevel=2,
        )
    return _private_from_pem(data, f"the key file {path}")


def _private_from_pem(data: bytes, what: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # cryptography's message can quote the input; ours names it only.
        raise ValueError(
            f"{what} is not an unencrypted PEM private key (servicewire keygen writes one)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{what} holds a {type(key).__name__}, not an ed25519 key")
    return key


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"{what} is {len(raw)} bytes; an ed25519 key is 32")
    return raw


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The one-line text form of a public key: ``ed25519:<base64 of 32 bytes>``.

    Given a private key, the text of its public half.
    """
    _require_crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def load_public_key(text: str) -> Ed25519PublicKey:
    """Read a public key: ``ed25519:<base64>`` (what ``keygen`` prints), bare
    base64 of the 32 key bytes, a PEM public key, or an OpenSSH ``ssh-ed25519``
    line. Raises ``ValueError`` with a message fit for an operator; a private
    key given by mistake is refused as such and never quoted.
    """
    _require_crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import (
        load_pem_public_key,
        load_ssh_public_key,
    )

    text = text.strip()
    if "PRIVATE KEY" in text:
        raise ValueError(
            "that is a private key: register the public key (servicewire keygen prints it "
            "on its last line) and keep the private key on the client"
        )
    loaded: object
    if text.startswith("-----BEGIN"):
        try:
            loaded = load_pem_public_key(text.encode("ascii", "replace"))
        except (ValueError, TypeError):
            raise ValueError("not a valid PEM public key") from None
    elif text.startswith("ssh-"):
        try:
            loaded = load_ssh_public_key(text.encode("ascii", "replace"))
        except (ValueError, TypeError):
            raise ValueError("not a valid OpenSSH public key line") from None
    else:
        body = text.removeprefix(PUBLIC_KEY_PREFIX)
        if not _RAW_KEY_RE.fullmatch(body):
            raise ValueError(
                "not an ed25519 public key: expected 'ed25519:' and 44 base64 characters "
                "(as servicewire keygen prints), a PEM public key or an ssh-ed25519 line"
            )
        loaded = Ed25519PublicKey.from_public_bytes(_b64(body, "the public key"))
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError(f"the key is a {type(loaded).__name__}, not an ed25519 public key")
    return loaded


def content_digest(
    body: bytes | bytearray | memoryview | Iterable[bytes | bytearray | memoryview],
    algorithm: str = "sha-256",
) -> str:
    """The RFC 9530 ``Content-Digest`` field value of ``body``, one buffer or
    the buffers that make it, in order.

    >>> content_digest(b"")
    'sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:'
    """
    hasher = DIGEST_ALGORITHMS.get(algorithm)
    if hasher is None:
        raise ValueError(f"unknown digest algorithm {algorithm!r}; use sha-256 or sha-512")
    state = hasher()
    for piece in (body,) if isinstance(body, bytes | bytearray | memoryview) else body:
        state.update(piece)
    digest = state.digest()
    return f"{algorithm}=:{base64.b64encode(digest).decode('ascii')}:"


@dataclass
class _Message:
    """The request as http-message-signatures reads and writes it."""

    method: str
    url: str
    headers: httpx.Headers


class SignatureAuth(httpx.Auth):
    """Sign every request with an ed25519 private key (RFC 9421).

    Each request gets a ``Content-Digest`` of its body and a signature over
    its method, target URI, authority and that digest, with the ``created``
    time, the key id and a fresh random nonce, so the server can refuse a
    tampered, stale or replayed request. Works for ``Client`` and
    ``AsyncClient`` alike. A body streamed by servicewire's client is hashed
    from its ``pieces`` as they lie; any other streamed body is read first.

    ``signing_key`` is a key file's path, a PEM text, raw base64 or a key
    object. ``clock`` gives the time in seconds (``time.time``); tests and
    programs on a badly set clock may supply their own.
    """

    def __init__(
        self,
        key_id: str,
        signing_key: str | os.PathLike[str] | Ed25519PrivateKey,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not key_id or not key_id.isascii() or not key_id.isalnum():
            raise ValueError("key_id must be the key's id: letters and digits, as issued")
        private = load_private_key(signing_key)
        from http_message_signatures import HTTPMessageSigner, MappingKeyResolver
        from http_message_signatures.algorithms import ED25519

        self._key_id = key_id
        self._clock = clock
        self._signer = HTTPMessageSigner(
            signature_algorithm=ED25519,
            key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: private}),
        )

    def __repr__(self) -> str:
        return f"<SignatureAuth key_id={self._key_id!r}>"

    @property
    def key_id(self) -> str:
        """The id the server knows this key by."""
        return self._key_id

    def sign(self, request: httpx.Request) -> None:
        """Add ``Content-Digest``, ``Signature-Input`` and ``Signature`` to ``request``."""
        pieces = getattr(request.stream, "pieces", None)
        body = request.content if pieces is None else pieces
        request.headers["Content-Digest"] = content_digest(body)
        self._signer.sign(
            _Message(request.method, str(request.url), request.headers),
            key_id=self._key_id,
            created=datetime.fromtimestamp(self._clock(), UTC),
            nonce=secrets.token_urlsafe(_NONCE_BYTES),
            label=SIGNATURE_LABEL,
            covered_component_ids=COVERED_COMPONENTS,
            use_existing_digest=True,
        )

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        if not hasattr(request.stream, "pieces"):
            request.read()
        yield from self.auth_flow(request)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not hasattr(request.stream, "pieces"):
            await request.aread()
        for outgoing in self.auth_flow(request):
            yield outgoing

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign the request, then send it (httpx.Auth's flow; the body must be readable)."""
        self.sign(request)
        yield request
