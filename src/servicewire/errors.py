"""The one error hierarchy, shared by the server and the client.

Every failure travels as ``{"error": {"type": ..., "message": ..., "details": ...}}``
with an HTTP status. On the server, raising any :class:`ServiceError` subclass
from a service sends its type name, message, details and status; on the client,
the same response is raised again as the class registered under that type name
(the wire types below), or as a plain :class:`ServiceError` carrying ``.type``
when the name is not known locally.

Example::

    class Overdrawn(ServiceError):
        status = 409

    raise Overdrawn("balance too low", details={"missing": "12.50"})
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "Forbidden",
    "InternalError",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServiceError",
    "TransportError",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationError",
    "error_from_wire",
]


class ServiceError(Exception):
    """Base of every servicewire error, raised by services and by the client.

    Subclass it to give a service its own errors; the class name is the wire
    ``type`` and the class attribute ``status`` the HTTP status (400 unless
    set). ``details`` is any value the codec can carry.
    """

    status: ClassVar[int] = 400
    #: The ``X-Request-ID`` of the call that failed, set by the client.
    request_id: str | None = None

    def __init__(
        self,
        message: str = "",
        details: Any = None,
        *,
        type: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.type = type or self.__class__.__name__
        if status is not None:
            # An instance attribute shadows the class default: used when the
            # client rebuilds an error whose type it does not know.
            self.status = status  # type: ignore[misc]

    def to_wire(self) -> dict[str, Any]:
        """The error envelope sent in a response body."""
        return {"error": {"type": self.type, "message": self.message, "details": self.details}}

    def __repr__(self) -> str:
        return f"{self.type}(status={self.status}, message={self.message!r})"

    def __str__(self) -> str:
        return f"{self.type} ({self.status}): {self.message}" if self.message else self.type


class BadRequest(ServiceError):
    """The body could not be decoded (400)."""

    status = 400


class ValidationError(ServiceError):
    """Arguments are missing, unknown or of the wrong type (422).

    ``details`` maps each offending argument name to what is wrong with it.
    """

    status = 422


class Unauthorized(ServiceError):
    """No valid credential was presented (401)."""

    status = 401


class Forbidden(ServiceError):
    """The caller is known but may not do this (403)."""

    status = 403


class NotFound(ServiceError):
    """No such service, or not one this caller may see (404)."""

    status = 404


class MethodNotAllowed(ServiceError):
    """The HTTP method is not the one this endpoint takes (405)."""

    status = 405


class NotAcceptable(ServiceError):
    """No codec the server speaks matches ``Accept`` (406)."""

    status = 406


class PayloadTooLarge(ServiceError):
    """The body, or its decompressed form, exceeds the site's bound (413)."""

    status = 413


class UnsupportedMediaType(ServiceError):
    """The request's ``Content-Type`` names no codec the caller may use (415)."""

    status = 415


class RateLimited(ServiceError):
    """Too many calls; retry after ``retry_after`` seconds (429)."""

    status = 429

    def __init__(
        self,
        message: str = "",
        details: Any = None,
        *,
        retry_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, details, **kwargs)
        self.retry_after = retry_after


class InternalError(ServiceError):
    """The service failed unexpectedly (500); details only under ``DEBUG``."""

    status = 500


class TransportError(ServiceError):
    """The client could not talk to the server at all, or got no envelope back.

    ``status`` is the HTTP status when a response arrived, else 0.
    """

    status = 0


_WIRE_TYPES: dict[str, type[ServiceError]] = {
    cls.__name__: cls
    for cls in (
        BadRequest,
        ValidationError,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        NotAcceptable,
        PayloadTooLarge,
        UnsupportedMediaType,
        RateLimited,
        InternalError,
    )
}


def error_from_wire(envelope: Any, status: int) -> ServiceError:
    """Rebuild the exception that a server sent as an error envelope.

    Known wire types come back as their own class; any other type (a
    service's own error) as :class:`ServiceError` with that ``type``.
    """
    body = envelope.get("error") if isinstance(envelope, dict) else None
    if not isinstance(body, dict):
        return TransportError("response carried no error envelope", status=status)
    type_name = str(body.get("type") or "ServiceError")
    message = str(body.get("message") or "")
    details = body.get("details")
    cls = _WIRE_TYPES.get(type_name)
    if cls is None:
        return ServiceError(message, details, type=type_name, status=status)
    error = cls(message, details)
    if error.status != status:
        error.status = status  # type: ignore[misc]
    return error
