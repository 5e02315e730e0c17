"""Short-lived tokens traded for a credential at ``<mount>/_auth/token``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from servicewire.auth import Caller
from servicewire.errors import Unauthorized

TOKEN_PREFIX = "swt."  # noqa: S105 - a marker, not a secret


def looks_like_token(value: str) -> bool:
    """Whether a bearer value is a token rather than an API key."""
    return value.startswith(TOKEN_PREFIX)


def authenticate_token(token: str) -> Caller:
    """The caller a token was issued to; raises Unauthorized otherwise."""
    raise Unauthorized("tokens are not accepted by this site yet")


def issue_token(caller: Caller, arguments: dict[str, Any]) -> dict[str, Any]:
    """A new token for ``caller``: ``{"token": ..., "expires_in": seconds}``."""
    raise Unauthorized("tokens are not issued by this site yet")


def is_password_login(request: HttpRequest) -> bool:
    """Whether a token request offers a username and password, not a credential."""
    return False


def authenticate_password(request: HttpRequest, body: bytes | bytearray) -> Caller:
    """The caller mapped to the site user whose username and password ``body`` holds."""
    raise Unauthorized("password login is not accepted by this site")
