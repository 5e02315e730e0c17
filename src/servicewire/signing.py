"""ed25519 request signing (RFC 9421 with an RFC 9530 ``Content-Digest``).

The client half: key files and :class:`SignatureAuth`. No Django here.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx


class SignatureAuth(httpx.Auth):
    """Sign every request with an ed25519 private key."""

    def __init__(self, key_id: str, signing_key: str) -> None:
        self._key_id = key_id
        self._signing_key = signing_key

    def __repr__(self) -> str:
        return f"<SignatureAuth key_id={self._key_id!r}>"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise NotImplementedError("request signing is not supported by this client yet")
