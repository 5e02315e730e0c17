"""servicewire without auth and audit: a bench-only view, to show what they cost.

It does what servicewire's own view does for a call, minus everything about
the caller: the body is read the same way (:mod:`servicewire.receiving`,
straight from gunicorn's socket into one preallocated buffer), decoded
with the msgpack codec under the same limits, bound by the same registry
entry and the result encoded by the same codec into segments, streamed the
same way when it holds large buffers (:mod:`servicewire.sending`).
Left out: authentication (the key look-up and its hash), throttling, codec
negotiation, the request id and the audit entry. The gap between this view and
the real mount is the cost of those, nothing else.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from servicewire import codecs, receiving, sending
from servicewire.registry import registry
from servicewire.segments import body_size

_LIMITS = codecs.Limits(max_body_bytes=settings.SERVICEWIRE["MAX_BODY_BYTES"])


def _read_body(request: HttpRequest) -> bytearray | memoryview:
    return receiving.read_body(request, int(request.META.get("CONTENT_LENGTH") or 0))


@csrf_exempt
def call(request: HttpRequest, name: str) -> HttpResponse | StreamingHttpResponse:
    """``POST bench/bare/<name>``: codec, registry, function, codec; nothing else."""
    found = registry.get(name)
    if found is None or request.method != "POST":
        raise Http404
    body = _read_body(request)
    arguments = codecs.MSGPACK.decode(body, _LIMITS) if body else {}
    result = found.func(**found.bind(arguments, lax=False))
    segments = codecs.MSGPACK.encode_segments(result)
    if len(segments) == 1:
        return HttpResponse(bytes(segments[0]), content_type=codecs.MSGPACK.content_type)
    response = StreamingHttpResponse(
        sending.pieces(segments, request.environ), content_type=codecs.MSGPACK.content_type
    )
    response["Content-Length"] = str(body_size(segments))
    return response
