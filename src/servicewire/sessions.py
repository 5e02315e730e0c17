"""Browser calls by a logged-in Django user (session cookie plus CSRF token).

A page of the site calls a service with ``fetch``, sending the session cookie
and the CSRF token (``X-CSRFToken``), and counts as the client application
linked to its user (:func:`servicewire.tokens.client_for_user`). The views are
``csrf_exempt`` because key callers send no cookies; for a session caller
the check is Django's own, run here.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from servicewire.auth import Caller
from servicewire.errors import Forbidden
from servicewire.tokens import client_for_user


def _no_response(request: HttpRequest) -> HttpResponse:
    # The middleware wants a next handler; only its process_view is used.
    raise AssertionError("not called")


_csrf = CsrfViewMiddleware(_no_response)


def _session_user(request: HttpRequest) -> Any:
    user = getattr(request, "user", None)
    if user is None and hasattr(request, "session"):
        # A site without AuthenticationMiddleware: read the session directly.
        user = get_user(request)
    return user


def authenticate_session(request: HttpRequest) -> Caller | None:
    """The caller mapped to the request's logged-in user, or None.

    None when the request carries an ``Authorization`` header (that is the
    credential, whatever its scheme), no session cookie or no logged-in user. Forbidden when
    the CSRF check fails: a request another site made the browser send.
    """
    # No session cookie, no session to read: reading one would also add
    # "Vary: Cookie" to the answer, which hide mode must keep identical to
    # the site's own 404.
    if "Authorization" in request.headers or settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return None
    user = _session_user(request)
    if user is None or not user.is_authenticated:
        return None
    # Django's own check (token against cookie, and Origin/Referer over HTTPS);
    # a callback without csrf_exempt makes it enforce, whatever our view says.
    if _csrf.process_view(request, None, (), {}) is not None:  # type: ignore[arg-type]
        raise Forbidden(
            "a browser call needs a valid CSRF token: send the csrftoken cookie's "
            "value in the X-CSRFToken header"
        )
    return Caller(client=client_for_user(user), key_id="", credential="session", user=user)
