"""How the client proves who it is: one ``httpx.Auth`` per kind of credential.

- :class:`BearerAuth`: an API key in ``Authorization: Bearer``.
- :class:`servicewire.signing.SignatureAuth`: each request signed with an
  ed25519 key (RFC 9421); no shared secret exists.
- :class:`TokenAuth`: trades another credential for a short-lived token at
  ``<mount>/_auth/token`` and refreshes it before it expires.

None of them imports Django: they run in the calling program.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncGenerator, Generator

import httpx

from servicewire import errors


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
    """Log in once with ``inner`` at ``token_url``, then send the token.

    The login is a ``POST`` to ``token_url`` authenticated by ``inner`` (a
    bearer key or a signing key); the token it returns is sent as
    ``Authorization: Bearer <token>`` until little of its life is left
    (a tenth, at most 30 seconds), when the next request logs in again first.
    A request refused with 401 while carrying an older token (expired, or the
    server restarted with a new secret) logs in once more and is retried
    once; a failed login is returned as the response, so the caller sees the
    server's own error. ``scopes`` narrows the token to some of the client's
    scopes. The token is never shown in ``repr`` or logs.

    Works with ``httpx.Client`` and ``httpx.AsyncClient`` alike: the login
    request goes through the same client and connection pool. The request is
    not read ahead: servicewire's bodies (bytes, or a streamed body that can
    be sent again) survive the one retry as they are.
    """

    def __init__(
        self, inner: httpx.Auth, token_url: str, *, scopes: list[str] | None = None
    ) -> None:
        self._inner = inner
        self._token_url = token_url
        self._scopes = scopes
        # (token, monotonic time to log in again); replaced whole, so a thread
        # never sees a token paired with another token's deadline.
        self._current: tuple[str, float] | None = None

    def __repr__(self) -> str:
        state = "set" if self._current is not None else "none"
        return f"<TokenAuth token={state} login={self._inner!r}>"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self._flow(request)
        outgoing, read = next(flow)
        while True:
            response = yield outgoing
            if read:
                response.read()
            try:
                outgoing, read = flow.send(response)
            except StopIteration:
                return

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self._flow(request)
        outgoing, read = next(flow)
        while True:
            response = yield outgoing
            if read:
                await response.aread()
            try:
                outgoing, read = flow.send(response)
            except StopIteration:
                return

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Not used: the flows above read the login response in their own I/O."""
        raise RuntimeError("TokenAuth runs through sync_auth_flow or async_auth_flow")

    def _flow(self, request: httpx.Request) -> _Flow:
        """The exchange, I/O-free: yields (request, whether its body is needed)."""
        current = self._current
        fresh = current is None or time.monotonic() >= current[1]
        if fresh:
            failure = yield from self._login()
            if failure is not None:
                return
        token = self._token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request, False
        if response.status_code != 401 or fresh:
            return
        # The token was refused: log in again, once, and send the request again.
        self._current = None
        failure = yield from self._login()
        if failure is not None:
            return
        request.headers["Authorization"] = f"Bearer {self._token()}"
        yield request, False

    def _token(self) -> str:
        current = self._current
        if current is None:
            raise errors.TransportError("no token after logging in", status=0)
        return current[0]

    def _login(
        self,
    ) -> Generator[tuple[httpx.Request, bool], httpx.Response, httpx.Response | None]:
        """Trade the inner credential for a token; returns the failed response, if any."""
        body = {} if self._scopes is None else {"scopes": list(self._scopes)}
        login = httpx.Request(
            "POST",
            self._token_url,
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        sent = time.monotonic()
        inner = self._inner.auth_flow(login)
        outgoing = next(inner)
        while True:
            response = yield outgoing, True
            try:
                outgoing = inner.send(response)
            except StopIteration:
                break
        if response.status_code != 200:
            return response
        token, expires_in = _read_token(response)
        # Measured from when the login was sent, so network time only shortens it.
        margin = min(30.0, expires_in / 10)
        self._current = (token, sent + expires_in - margin)
        return None


_Flow = Generator[tuple[httpx.Request, bool], httpx.Response, None]
_Login = Generator[tuple[httpx.Request, bool], httpx.Response, httpx.Response | None]
# Visible ASCII only: the token goes verbatim into a header.
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")


def _read_token(response: httpx.Response) -> tuple[str, float]:
    """The token and its lifetime from a login response; TransportError if absent."""
    try:
        answer = json.loads(response.content)
    except ValueError:
        answer = None
    token = answer.get("token") if isinstance(answer, dict) else None
    expires_in = answer.get("expires_in") if isinstance(answer, dict) else None
    if (
        not isinstance(token, str)
        or not _TOKEN.fullmatch(token)
        or not isinstance(expires_in, int | float)
        or isinstance(expires_in, bool)
        or not 0 <= expires_in < 10**9
    ):
        # The body is not quoted: it may hold the token.
        raise errors.TransportError(
            f"the token endpoint {response.request.url} answered without a usable token",
            status=response.status_code,
        )
    return token, float(expires_in)
