"""The only server module that speaks HTTP.

A call reads top to bottom in :func:`_call`: address limit, credential,
transport checks, client rate, negotiation, service, scopes and permissions,
body, arguments, the function, the response. Every refusal is a
:class:`ServiceError` turned into the error envelope by :func:`_error_response`,
in the negotiated codec (JSON when negotiation itself failed). Every request,
allowed or refused, leaves one audit entry (:func:`_audited`).
"""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.db import transaction
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.views.decorators.csrf import csrf_exempt

from servicewire import audit, codecs, compression, receiving, sending, throttle, tokens
from servicewire.audit import AuditRecord
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
from servicewire.pickling import pickle_codec
from servicewire.registry import Service, registry
from servicewire.segments import body_size
from servicewire.threads import coroutine_caller

logger = logging.getLogger("servicewire")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class _Exchange:
    """What one request has established so far, for its response and audit."""

    request_id: str
    record: AuditRecord
    codec: Codec = codecs.JSON
    encoding: str | None = None  # the response's content encoding, if it pays
    shuffle: bool = False  # the caller reads byte-shuffled arrays (extension type 14)


def _request_id(request: HttpRequest) -> str:
    sent = request.headers.get("X-Request-ID", "")
    # One shaped like a credential is neither echoed nor stored in the audit.
    sane = _REQUEST_ID_RE.fullmatch(sent) and not audit.looks_secret(sent)
    return sent if sane else uuid.uuid4().hex


def remote_addr(request: HttpRequest, trusted_proxies: int) -> str:
    """The caller's address: ``REMOTE_ADDR``, or the address the nearest
    trusted proxy saw, from the right of ``X-Forwarded-For``.

    Entries further left were written by the client itself and prove nothing.
    """
    direct = str(request.META.get("REMOTE_ADDR") or "")
    if trusted_proxies <= 0:
        return direct
    forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",")]
    forwarded = [a for a in forwarded if a]
    if len(forwarded) < trusted_proxies:
        return forwarded[0] if forwarded else direct
    return forwarded[-trusted_proxies]


def _response(content: bytes, exchange: _Exchange, status: int = 200) -> HttpResponse:
    response = HttpResponse(content, status=status, content_type=exchange.codec.content_type)
    response["X-Request-ID"] = exchange.request_id
    return response


def _value_response(value: Any, exchange: _Exchange, request: HttpRequest) -> HttpResponseBase:
    """The response carrying a service's return value.

    A body with large buffers (arrays, big bytes) is streamed from its
    segments with an explicit ``Content-Length`` (clients preallocate from
    it), so the server never holds a joined copy of it; any other body is
    one plain response, which costs less.
    """
    # Shuffled arrays only go compressed: shuffling alone saves no byte.
    segments = exchange.codec.encode_segments(value, exchange.shuffle and bool(exchange.encoding))
    size = body_size(segments)
    if exchange.encoding and compression.worth_compressing(segments, size):
        packed = _response(b"".join(compression.compress(segments, exchange.encoding)), exchange)
        packed["Content-Encoding"] = exchange.encoding
        packed["Vary"] = "Accept-Encoding"
        return packed
    if len(segments) == 1:
        return _response(bytes(segments[0]), exchange)
    response = StreamingHttpResponse(
        sending.body(segments, getattr(request, "environ", None)),
        content_type=exchange.codec.content_type,
    )
    response["Content-Length"] = str(size)
    response["X-Request-ID"] = exchange.request_id
    return response


def _error_response(error: ServiceError, exchange: _Exchange) -> HttpResponse:
    response = _response(exchange.codec.encode_error(error), exchange, error.status)
    exchange.record.error_type = error.type
    if isinstance(error, Unauthorized):
        response["WWW-Authenticate"] = 'Bearer realm="servicewire"'
    if isinstance(error, MethodNotAllowed) and isinstance(error.details, dict):
        response["Allow"] = ", ".join(error.details.get("allowed", []))
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        response["Retry-After"] = str(max(1, round(retry_after)))
    return response


def _check_caller(
    request: HttpRequest, exchange: _Exchange, config: Settings, method: str
) -> Caller:
    """Who calls, and whether this transport, method and rate are acceptable.

    In hide mode a caller without a valid credential gets the site's own 404,
    exactly as for a URL that does not exist (Http404 goes to Django's handler).
    """
    address = exchange.record.remote_addr
    refusal: ServiceError | None = None
    try:
        # Checked before any credential is, so that keys cannot be guessed
        # faster than the failure rate allows (for a key, read in the same
        # cache round trip as the key's state).
        caller = authenticate(request, throttle.address_limit(address))
    except ServiceError as error:
        caller, refusal = None, error
    if isinstance(refusal, Unauthorized):
        throttle.note_failure(address)
    if caller is None and config.HIDE_FROM_UNAUTHENTICATED:
        exchange.record.error_type = refusal.type if refusal else "Unauthorized"
        raise Http404
    # Known from here on, so that a refusal below still names who was refused.
    exchange.record.caller = caller
    if config.REQUIRE_HTTPS and not request.is_secure():
        raise Forbidden("HTTPS is required: this site refuses calls over plain HTTP")
    if request.method != method:
        raise MethodNotAllowed(
            f"use {method} here, not {request.method}", details={"allowed": [method]}
        )
    if refusal is not None:
        raise refusal
    if caller is None:
        raise Unauthorized("a credential is required (Authorization: Bearer <key>)")
    throttle.check_client(caller)
    return caller


def _available_codecs(caller: Caller, config: Settings) -> tuple[Codec, ...]:
    """The codecs this caller may use: pickle only where site and client allow it.

    Everyone else never has pickle among its codecs, so a pickle body from
    them is refused (415) before a byte of it is read as pickle.
    """
    if config.ALLOW_PICKLE and caller.client.allow_pickle:
        return (*codecs.CODECS.values(), pickle_codec(config.PICKLE_ALLOW))
    return tuple(codecs.CODECS.values())


def _negotiate(
    request: HttpRequest, exchange: _Exchange, has_body: bool, available: tuple[Codec, ...]
) -> Codec:
    """The request's codec; also sets the response codec on ``exchange``."""
    content_type = request.headers.get("Content-Type", "")
    known = codecs.codec_for_content_type(content_type) if content_type else None
    # Matched by name: the site's pickle codec carries its own allow-list.
    request_codec = next((c for c in available if known and c.name == known.name), None)
    # An empty body means no arguments, whatever type it claims to be.
    if request_codec is None and has_body:
        raise UnsupportedMediaType(
            f"cannot read a body of type {content_type[:100]!r}; "
            f"send one of: {', '.join(c.content_type for c in available)}",
        )
    default = request_codec or codecs.JSON
    response_codec = codecs.negotiate(request.headers.get("Accept"), default, available)
    if response_codec is None:
        raise NotAcceptable(
            "no codec matches Accept; this site answers in: "
            + ", ".join(c.content_type for c in available)
        )
    exchange.codec = response_codec
    return default


def _declared_length(request: HttpRequest) -> int:
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        raise BadRequest("Content-Length is not a number") from None


def _read_body(request: HttpRequest, length: int, limit: int) -> bytearray | memoryview:
    """Read the body into one writable buffer, refusing it unread when it is too big.

    Arrays decoded from it are writable views of it (:mod:`servicewire.receiving`).
    """
    if length > limit:
        raise PayloadTooLarge(
            f"the body is {length} bytes; this site accepts at most {limit}",
            details={"limit": limit},
        )
    return receiving.read_body(request, length)


def _decoded(
    request: HttpRequest, body: bytearray | memoryview, limit: int
) -> bytearray | memoryview:
    """The body with its ``Content-Encoding`` undone, bounded like any body."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity") or not body:
        return body
    try:
        return compression.decompress(body, encoding, limit)
    except ValueError:
        raise UnsupportedMediaType(
            f"cannot read a body encoded as {encoding[:40]!r}; this site reads: "
            + ", ".join(compression.available())
        ) from None


def _find_service(name: str | Service, caller: Caller) -> Service:
    found = registry.get(name) if isinstance(name, str) else name
    if found is None:
        raise NotFound(f"no service named {str(name)[:200]!r}")
    if not caller.may_call(found.scopes):
        raise Forbidden(
            f"this client may not call {found.name!r}: it needs one of the scopes "
            + ", ".join(sorted(found.scopes))
        )
    if not caller.has_permissions(found.permissions):
        raise Forbidden(f"calling {found.name!r} needs permissions the caller does not hold")
    return found


def _run(svc: Service, kwargs: dict[str, Any]) -> Any:
    call: Callable[..., Any] = coroutine_caller(svc.func) if svc.is_async else svc.func
    # The view itself runs outside ATOMIC_REQUESTS (so that the audit entry
    # survives a rollback); the service keeps the transaction the site asked for.
    if any(db.get("ATOMIC_REQUESTS") for db in django_settings.DATABASES.values()):
        with transaction.atomic():
            return call(**kwargs)
    return call(**kwargs)


def _internal_error(exc: BaseException, name: str, exchange: _Exchange) -> InternalError:
    logger.exception("service %s failed (request %s)", name, exchange.request_id, exc_info=exc)
    if django_settings.DEBUG:
        return InternalError(
            f"{type(exc).__name__}: {exc}",
            details={"traceback": traceback.format_exception(exc)},
        )
    return InternalError(f"the service failed; quote request id {exchange.request_id}")


def _call(request: HttpRequest, svc: Service | str, exchange: _Exchange) -> HttpResponseBase:
    name = svc if isinstance(svc, str) else svc.name
    config = get_settings()
    caller = _check_caller(request, exchange, config, "POST")
    length = _declared_length(request)
    request_codec = _negotiate(request, exchange, length > 0, _available_codecs(caller, config))
    found = _find_service(svc, caller)
    body = _read_body(request, length, config.MAX_BODY_BYTES)
    exchange.record.bytes_in = len(body)
    if caller.check_body is not None:
        caller.check_body(body)  # the digest covers the body as sent, encoded or not
    body = _decoded(request, body, config.MAX_BODY_BYTES)
    exchange.encoding = compression.choose(request.headers.get("Accept-Encoding"))
    exchange.shuffle = request.headers.get(compression.SHUFFLE_HEADER) == "1"
    arguments = request_codec.decode(body, config.limits) if body else {}
    if not isinstance(arguments, dict):
        raise BadRequest("the body must be a map of argument names to values")
    kwargs = found.bind(arguments, lax=request_codec is codecs.JSON)
    try:
        result = _run(found, kwargs)
        if isinstance(result, HttpResponseBase):
            result.setdefault("X-Request-ID", exchange.request_id)
            return result
        return _value_response(result, exchange, request)
    except ServiceError:
        raise
    except Exception as exc:
        raise _internal_error(exc, name, exchange) from exc


def _audited(
    request: HttpRequest,
    service: str,
    handle: Callable[[HttpRequest, _Exchange], HttpResponseBase],
) -> HttpResponseBase:
    """Run ``handle`` and write the request's one audit entry, whatever happens."""
    request_id = _request_id(request)
    record = AuditRecord(
        request_id=request_id,
        remote_addr=remote_addr(request, get_settings().TRUSTED_PROXIES),
        user_agent=request.headers.get("User-Agent", ""),
        service=service,
    )
    exchange = _Exchange(request_id, record)
    status = 500
    bytes_out = 0
    try:
        try:
            response = handle(request, exchange)
        except ServiceError as error:
            response = _error_response(error, exchange)
        except Http404:
            status = 404
            raise
        except Exception as exc:
            response = _error_response(_internal_error(exc, service, exchange), exchange)
        status = response.status_code
        bytes_out = _body_length(response)
        return response
    finally:
        audit.write(record, status, bytes_out)


def _body_length(response: HttpResponseBase) -> int:
    """The size of a response body: its content, or a streamed body's Content-Length."""
    if isinstance(response, HttpResponse):
        return len(response.content)
    try:
        return max(0, int(response.get("Content-Length") or 0))
    except ValueError:
        return 0


def serve_service(request: HttpRequest, svc: Service | str) -> HttpResponseBase:
    """Serve one call of ``svc`` (a service, or a name to look up)."""
    name = svc if isinstance(svc, str) else svc.name
    return _audited(request, name, lambda req, exchange: _call(req, svc, exchange))


def _listing(
    build: Callable[[list[Service], HttpRequest], Any],
) -> Callable[[HttpRequest, _Exchange], HttpResponse]:
    def handle(request: HttpRequest, exchange: _Exchange) -> HttpResponse:
        config = get_settings()
        if not config.DISCOVERY:
            raise NotFound("discovery is turned off on this site")
        caller = _check_caller(request, exchange, config, "GET")
        available = _available_codecs(caller, config)
        exchange.codec = (
            codecs.negotiate(request.headers.get("Accept"), codecs.JSON, available) or codecs.JSON
        )
        visible = [
            s
            for s in registry
            if caller.may_call(s.scopes) and caller.has_permissions(s.permissions)
        ]
        return _response(exchange.codec.encode(build(visible, request)), exchange)

    return handle


def _password_token(
    request: HttpRequest, exchange: _Exchange, config: Settings, length: int
) -> HttpResponse:
    """A token for a site user's username and password, where the site allows it.

    Treated like any credential: limited per address before it is checked,
    a wrong password counted as a failure, plain HTTP refused where HTTPS is
    required, and hidden like the rest in hide mode.
    """
    address = exchange.record.remote_addr
    throttle.check_address(address)
    if config.REQUIRE_HTTPS and not request.is_secure():
        raise Forbidden("HTTPS is required: this site refuses calls over plain HTTP")
    _negotiate(request, exchange, True, (codecs.JSON, codecs.MSGPACK))
    body = _read_body(request, length, 4096)
    exchange.record.bytes_in = len(body)
    try:
        caller = tokens.authenticate_password(request, bytes(body))
    except Unauthorized as refusal:
        throttle.note_failure(address)
        if config.HIDE_FROM_UNAUTHENTICATED:
            exchange.record.error_type = refusal.type
            raise Http404 from None
        raise
    exchange.record.caller = caller
    throttle.check_client(caller)
    return _response(exchange.codec.encode(tokens.issue_token(caller, {})), exchange)


def _token(request: HttpRequest, exchange: _Exchange) -> HttpResponse:
    config = get_settings()
    length = _declared_length(request)
    if request.method == "POST" and length and tokens.is_password_login(request):
        return _password_token(request, exchange, config, length)
    caller = _check_caller(request, exchange, config, "POST")
    request_codec = _negotiate(request, exchange, length > 0, _available_codecs(caller, config))
    body = _read_body(request, length, 64 * 1024)
    exchange.record.bytes_in = len(body)
    if caller.check_body is not None:
        caller.check_body(body)
    arguments = request_codec.decode(body, config.limits) if body else {}
    if not isinstance(arguments, dict):
        raise BadRequest("the body must be a map")
    return _response(exchange.codec.encode(tokens.issue_token(caller, arguments)), exchange)


@csrf_exempt
@transaction.non_atomic_requests
def call(request: HttpRequest, name: str) -> HttpResponseBase:
    """``POST <mount>/<name>``: call a service."""
    return serve_service(request, name)


@csrf_exempt
@transaction.non_atomic_requests
def discovery(request: HttpRequest) -> HttpResponseBase:
    """``GET <mount>/``: the services this caller may call, with JSON Schemas."""
    build = _listing(lambda services, _: {"services": [s.describe() for s in services]})
    return _audited(request, "", build)


@csrf_exempt
@transaction.non_atomic_requests
def openapi(request: HttpRequest) -> HttpResponseBase:
    """``GET <mount>/openapi.json``: OpenAPI 3.1 for the JSON codec."""
    build = _listing(lambda services, req: openapi_document(services, req.build_absolute_uri(".")))
    return _audited(request, "openapi.json", build)


@csrf_exempt
@transaction.non_atomic_requests
def token(request: HttpRequest) -> HttpResponseBase:
    """``POST <mount>/_auth/token``: trade a credential for a short-lived token."""
    return _audited(request, "_auth/token", _token)
