"""Browser calls by a logged-in Django user (session cookie plus CSRF token)."""

from __future__ import annotations

from django.http import HttpRequest

from servicewire.auth import Caller


def authenticate_session(request: HttpRequest) -> Caller | None:
    """The caller mapped to the request's logged-in user, or None."""
    return None
