"""The original pattern, as the 2012 article describes it.

A view decorator that forces POST and a secret ``User-Agent``, unpickles the
whole body into keyword arguments and pickles whatever the function returns.
No other authentication and no audit: that is the pattern servicewire
replaces. Protocol 5, the fastest pickle, so the peer is at its best.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from bench.site.data import make_array

USER_AGENT = "Python-services/2.7"


def pickled_service(func: Callable[..., Any]) -> Callable[[HttpRequest], HttpResponse]:
    """Turn ``func(**kwargs)`` into a view speaking pickle both ways."""

    @csrf_exempt
    @functools.wraps(func)
    def view(request: HttpRequest) -> HttpResponse:
        if request.method != "POST" or request.headers.get("User-Agent") != USER_AGENT:
            raise Http404
        kwargs = pickle.loads(request.body) if request.body else {}
        result = func(**kwargs)
        if isinstance(result, HttpResponse):
            return result
        return HttpResponse(pickle.dumps(result, protocol=5))

    return view


@pickled_service
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pickled_service
def download(n: int) -> Any:
    """A float64 array of ``n`` elements."""
    return make_array(n)


@pickled_service
def upload(data: Any) -> int:
    """The size in bytes of the array received."""
    return int(data.nbytes)
