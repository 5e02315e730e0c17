"""servicewire without auth and audit: a bench-only view, to show what they cost.

It does what servicewire's own view does for a call, minus everything about
the caller: the body is read the same way (into one preallocated bytearray,
1 MiB at a time), decoded with the msgpack codec under the same limits,
bound by the same registry entry and the result encoded by the same codec.
Left out: authentication (the key look-up and its hash), throttling, codec
negotiation, the request id and the audit entry. The gap between this view and
the real mount is the cost of those, nothing else.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from servicewire import codecs
from servicewire.registry import registry

_LIMITS = codecs.Limits(max_body_bytes=settings.SERVICEWIRE["MAX_BODY_BYTES"])
_CHUNK = 1 << 20


def _read_body(request: HttpRequest) -> bytearray:
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    body = bytearray(length)
    view = memoryview(body)
    filled = 0
    while filled < length:
        chunk = request.read(min(_CHUNK, length - filled))
        if not chunk:
            break
        view[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    return body


@csrf_exempt
def call(request: HttpRequest, name: str) -> HttpResponse:
    """``POST bench/bare/<name>``: codec, registry, function, codec; nothing else."""
    found = registry.get(name)
    if found is None or request.method != "POST":
        raise Http404
    body = _read_body(request)
    arguments = codecs.MSGPACK.decode(body, _LIMITS) if body else {}
    result = found.func(**found.bind(arguments, lax=False))
    return HttpResponse(codecs.MSGPACK.encode(result), content_type=codecs.MSGPACK.content_type)
