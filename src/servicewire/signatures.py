"""Signed requests (HTTP Message Signatures, RFC 9421) -> the calling client."""

from __future__ import annotations

from django.http import HttpRequest

from servicewire.auth import Caller
from servicewire.errors import Unauthorized


def is_signed(request: HttpRequest) -> bool:
    """Whether the request carries a message signature at all."""
    return "Signature" in request.headers or "Signature-Input" in request.headers


def authenticate_signature(request: HttpRequest) -> Caller:
    """The caller whose key signed the request; raises Unauthorized otherwise."""
    raise Unauthorized("signed requests are not accepted by this site yet")
