"""The only server module that speaks HTTP.

A call reads top to bottom in :func:`serve_service`: request id, credential,
transport checks, negotiation, service, scopes, body, arguments, the function,
the response. Every refusal is a :class:`ServiceError` turned into the error
envelope by :func:`_error_response`, in the negotiated codec (JSON when
negotiation itself failed).
"""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from servicewire import codecs
from servicewire.auth import Caller, authenticate
from servicewire.codecs import Codec
from servicewire.conf import Settings, get_settings
from servicewire.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
    UnsupportedMediaType,
)
from servicewire.openapi import openapi_document
from servicewire.registry import Service, registry

logger = logging.getLogger("servicewire")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_READ_CHUNK = 1 << 20


@dataclass
class _Exchange:
    """What one request has established so far, for its response."""

    request_id: str
    codec: Codec = codecs.JSON


def _request_id(request: HttpRequest) -> str:
    sent = request.headers.get("X-Request-ID", "")
    return sent if _REQUEST_ID_RE.match(sent) else uuid.uuid4().hex


def _response(content: bytes, exchange: _Exchange, status: int = 200) -> HttpResponse:
    response = HttpResponse(content, status=status, content_type=exchange.codec.content_type)
    response["X-Request-ID"] = exchange.request_id
    return response


def _error_response(error: ServiceError, exchange: _Exchange) -> HttpResponse:
    response = _response(exchange.codec.encode_error(error), exchange, error.status)
    if isinstance(error, Unauthorized):
        response["WWW-Authenticate"] = 'Bearer realm="servicewire"'
    if isinstance(error, MethodNotAllowed) and isinstance(error.details, dict):
        response["Allow"] = ", ".join(error.details.get("allowed", []))
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        response["Retry-After"] = str(max(1, round(retry_after)))
    return response


def _check_caller(request: HttpRequest, config: Settings, method: str) -> Caller:
    """Who calls, and whether this transport and method are acceptable.

    In hide mode a caller without a valid credential gets the site's own 404,
    exactly as for a URL that does not exist (Http404 goes to Django's handler).
    """
    caller = authenticate(request)
    if caller is None and config.HIDE_FROM_UNAUTHENTICATED:
        raise Http404
    if config.REQUIRE_HTTPS and not request.is_secure():
        raise Forbidden("HTTPS is required: this site refuses calls over plain HTTP")
    if request.method != method:
        raise MethodNotAllowed(
            f"use {method} here, not {request.method}", details={"allowed": [method]}
        )
    if caller is None:
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
    return caller


def _negotiate(request: HttpRequest, exchange: _Exchange, has_body: bool) -> Codec:
    """The request's codec; also sets the response codec on ``exchange``."""
    content_type = request.headers.get("Content-Type", "")
    request_codec = codecs.codec_for_content_type(content_type) if content_type else None
    # An empty body means no arguments, whatever type it claims to be.
    if request_codec is None and has_body:
        raise UnsupportedMediaType(
            f"cannot read a body of type {content_type[:100]!r}; "
            f"send one of: {', '.join(c.content_type for c in codecs.CODECS.values())}",
        )
    default = request_codec or codecs.JSON
    response_codec = codecs.negotiate(request.headers.get("Accept"), default)
    if response_codec is None:
        raise NotAcceptable(
            "no codec matches Accept; this site answers in: "
            + ", ".join(c.content_type for c in codecs.CODECS.values())
        )
    exchange.codec = response_codec
    return default


def _declared_length(request: HttpRequest) -> int:
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        raise BadRequest("Content-Length is not a number") from None


def _read_body(request: HttpRequest, length: int, limit: int) -> bytearray:
    """Read the body into one buffer, refusing it unread when it is too big.

    A bytearray, so that arrays decoded from it are writable views of it.
    """
    if length > limit:
        raise PayloadTooLarge(
            f"the body is {length} bytes; this site accepts at most {limit}",
            details={"limit": limit},
        )
    body = bytearray(length)
    view = memoryview(body)
    filled = 0
    while filled < length:
        chunk = request.read(min(_READ_CHUNK, length - filled))
        if not chunk:
            raise BadRequest("the body ended before Content-Length bytes arrived")
        view[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    return body


def _run(svc: Service, kwargs: dict[str, Any]) -> Any:
    if svc.is_async:
        return async_to_sync(svc.func)(**kwargs)
    return svc.func(**kwargs)


def _internal_error(exc: BaseException, name: str, exchange: _Exchange) -> InternalError:
    logger.exception("service %s failed (request %s)", name, exchange.request_id, exc_info=exc)
    if django_settings.DEBUG:
        return InternalError(
            f"{type(exc).__name__}: {exc}",
            details={"traceback": traceback.format_exception(exc)},
        )
    return InternalError(f"the service failed; quote request id {exchange.request_id}")


def serve_service(request: HttpRequest, svc: Service | str) -> HttpResponse:
    """Serve one call of ``svc`` (a service, or a name to look up)."""
    exchange = _Exchange(_request_id(request))
    name = svc if isinstance(svc, str) else svc.name
    try:
        config = get_settings()
        caller = _check_caller(request, config, "POST")
        length = _declared_length(request)
        request_codec = _negotiate(request, exchange, length > 0)
        found = registry.get(name) if isinstance(svc, str) else svc
        if found is None or not caller.may_call(found.scopes):
            if found is None:
                raise NotFound(f"no service named {name[:200]!r}")
            raise Forbidden(
                f"this client may not call {name!r}: it needs one of the scopes "
                + ", ".join(sorted(found.scopes))
            )
        body = _read_body(request, length, config.MAX_BODY_BYTES)
        arguments = request_codec.decode(body, config.limits) if body else {}
        if not isinstance(arguments, dict):
            raise BadRequest("the body must be a map of argument names to values")
        kwargs = found.bind(arguments, lax=request_codec is codecs.JSON)
        result = _run(found, kwargs)
        if isinstance(result, HttpResponse):
            result.setdefault("X-Request-ID", exchange.request_id)
            return result
        try:
            return _response(exchange.codec.encode(result), exchange)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _internal_error(exc, name, exchange) from exc
    except Http404:
        raise
    except ServiceError as error:
        return _error_response(error, exchange)
    except Exception as exc:
        return _error_response(_internal_error(exc, name, exchange), exchange)


def _serve_listing(
    request: HttpRequest, build: Callable[[list[Service], HttpRequest], Any]
) -> HttpResponse:
    exchange = _Exchange(_request_id(request))
    try:
        config = get_settings()
        if not config.DISCOVERY:
            raise NotFound("discovery is turned off on this site")
        caller = _check_caller(request, config, "GET")
        exchange.codec = codecs.negotiate(request.headers.get("Accept"), codecs.JSON) or codecs.JSON
        visible = [s for s in registry if caller.may_call(s.scopes)]
        return _response(exchange.codec.encode(build(visible, request)), exchange)
    except Http404:
        raise
    except ServiceError as error:
        return _error_response(error, exchange)


@csrf_exempt
def call(request: HttpRequest, name: str) -> HttpResponse:
    """``POST <mount>/<name>``: call a service."""
    return serve_service(request, name)


@csrf_exempt
def discovery(request: HttpRequest) -> HttpResponse:
    """``GET <mount>/``: the services this caller may call, with JSON Schemas."""
    return _serve_listing(
        request, lambda services, _: {"services": [s.describe() for s in services]}
    )


@csrf_exempt
def openapi(request: HttpRequest) -> HttpResponse:
    """``GET <mount>/openapi.json``: OpenAPI 3.1 for the JSON codec."""
    return _serve_listing(
        request, lambda services, req: openapi_document(services, req.build_absolute_uri("."))
    )
