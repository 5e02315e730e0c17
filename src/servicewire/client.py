"""Call servicewire services from Python: :class:`Client` and :class:`AsyncClient`.

Both speak wire protocol v1 over one pooled ``httpx`` client and share
everything but I/O: :class:`_BaseClient` builds each request and interprets
each response, and the two subclasses only send and read. Neither imports
Django, so the client works in a desktop app or a notebook.

Example::

    from servicewire import Client

    with Client("https://example.org/services/") as sw:  # key from SERVICEWIRE_KEY
        sw.call("add", a=1, b=2)                   # -> 3
        sw.science.spectrum(samples=arr)           # sugar for "science.spectrum"
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import math
import os
import re
import ssl
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from importlib import metadata
from types import TracebackType
from typing import Any, Self, TypeVar

import h11
import httpx

from servicewire import codecs, compression, errors
from servicewire.credentials import BearerAuth, TokenAuth
from servicewire.pickling import pickle_codec
from servicewire.progress import Meter, Progress
from servicewire.rawbody import direct_reader
from servicewire.segments import Segment, body_size, receive_buffer
from servicewire.signing import SignatureAuth
from servicewire.transport import AsyncTransport, DirectBody, direct_receiver

__all__ = ["RESPONSE_LIMITS", "AsyncClient", "Client"]

logger = logging.getLogger("servicewire.client")

#: Bounds on what the client accepts from a server. The caller chose to trust
#: the server, so sizes are far above the server's own request limits (64 GiB
#: bodies, 2**32 items or characters, million-bit integers); they still stop a
#: broken endpoint from exhausting memory. Nesting keeps the codec's default,
#: which guards the stack rather than memory. Body size is checked while
#: streaming, before decoding starts.
RESPONSE_LIMITS = dataclasses.replace(
    codecs.DEFAULT_LIMITS,
    max_body_bytes=64 * 2**30,
    max_length=2**32,
    max_int_bits=2**20,
    max_str_length=2**32,
)

# The server's own rule is stricter (dotted lower-case identifiers); the client
# only makes sure a name stays one path segment, and leaves the rest to the
# server so a 404 there is the single source of truth.
_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")

# A bearer token goes verbatim into a header: anything outside visible ASCII
# would make httpx or h11 raise an error whose text quotes the header value.
_KEY = re.compile(r"[\x21-\x7e]+")

# The codecs a client may send and decode. Only a client made with
# codec="pickle" reads a pickle response, and only through its allow-list
# (servicewire.pickling); any other client hands such a body back as bytes.
_CLIENT_CODECS = {codec.name: codec for codec in (codecs.MSGPACK, codecs.JSON, codecs.PICKLE)}

_E = TypeVar("_E", bound=errors.ServiceError)

_SNIPPET_CHARS = 200

# Request bodies above this size are streamed in pieces of this size.
_UPLOAD_PIECE = 512 * 1024
# Bodies at least this large go straight through the socket when possible (both ways).
_DIRECT_MIN = 1 << 20
# Service names whose URL a client keeps (a program calls a handful; this bounds a strange one).
_MAX_TARGETS = 1024


def _credential(
    key: str | None,
    key_id: str | None,
    signing_key: str | None,
    *,
    use_tokens: bool,
    token_url: str,
) -> httpx.Auth | None:
    """The httpx.Auth for the credential given: a signing key wins over a key."""
    auth: httpx.Auth | None = None
    if signing_key is not None or key_id is not None:
        if signing_key is None or key_id is None:
            raise ValueError("a signing key needs both key_id=... and signing_key=...")
        auth = SignatureAuth(key_id, signing_key)
    elif key is not None:
        auth = BearerAuth(key)
    if use_tokens:
        if auth is None:
            raise ValueError("use_tokens=True needs a key or a signing key to log in with")
        auth = TokenAuth(auth, token_url)
    return auth


def _user_agent() -> str:
    try:
        version = metadata.version("servicewire")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"servicewire/{version} python-httpx/{httpx.__version__}"


@dataclasses.dataclass(frozen=True, slots=True)
class _Request:
    """One HTTP exchange as the base client planned it."""

    method: str
    url: httpx.URL
    shared: Mapping[str, str]  # the headers every exchange of its kind sends
    headers: dict[str, str]  # and this exchange's own
    # ``shared`` merged into the httpx client's headers once, as httpx would
    # merge them, with Host: the start of a call's headers (None: let httpx merge).
    prepared: httpx.Headers | None
    body: list[Segment] | None
    request_id: str
    codec: codecs.Codec
    what: str  # names the exchange in error messages: "'add'", "discovery"


class _Cookies(httpx.Cookies):
    """The httpx client's cookie jar, skipping responses that set no cookie.

    httpx hands every response to the standard library's cookie jar, which
    first rebuilds the request and the response headers in urllib's and
    email's types: a tenth of a small call's time on the client, spent on
    responses that (from servicewire) never set a cookie.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        # Only Set-Cookie counts: the jar's default policy ignores Set-Cookie2.
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class _Upload(httpx.SyncByteStream, httpx.AsyncByteStream, DirectBody):
    """A request body sent from its segments, piece by piece, never joined.

    httpcore copies what is left of a ``bytes`` body after every partial
    send, which costs time quadratic in the body's size; pieces of at most
    :data:`_UPLOAD_PIECE` bytes bound that copy and keep it in the CPU cache.
    Each piece is copied once (h11 would join a view into new bytes anyway).
    The stream can be sent again (an auth flow may resend a request), and
    ``pieces`` lets :class:`~servicewire.signing.SignatureAuth` hash the body
    as it lies. The async client's transport sends it from the segments'
    own memory instead (:class:`~servicewire.transport.DirectBody`).
    """

    def __init__(self, segments: list[Segment], meter: Meter) -> None:
        self.pieces = segments
        self._meter = meter

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._pieces():
            yield piece
            self._meter.update(len(piece))
        self._meter.close()

    def _pieces(self) -> Iterator[bytes]:
        for segment in self.pieces:
            if isinstance(segment, bytes) and len(segment) <= _UPLOAD_PIECE:
                yield segment
                continue
            view = memoryview(segment)
            for start in range(0, len(view), _UPLOAD_PIECE):
                yield bytes(view[start : start + _UPLOAD_PIECE])

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self:
            yield piece

    def buffers(self) -> list[memoryview] | None:
        # Segments are bytes and 1-dimensional byte views (servicewire.segments).
        return [memoryview(segment) for segment in self.pieces]

    def sent(self, count: int) -> None:
        self._meter.update(count)

    def finished(self) -> None:
        self._meter.close()


def _http_request(
    http: httpx.Client | httpx.AsyncClient, request: _Request, progress: Progress
) -> httpx.Request:
    """The httpx request for ``request``; a large body goes as an :class:`_Upload`."""
    body = request.body
    size = body_size(body) if body is not None else 0
    if body is None or size <= _UPLOAD_PIECE:
        content = b"".join(body) if body is not None else None
        if content is not None and request.prepared is not None and not http.cookies:
            return _prepared_request(http, request, content)
        return http.build_request(
            request.method,
            request.url,
            content=content,
            headers={**request.shared, **request.headers},
        )
    # An explicit length: WSGI servers need it, and httpx then sends no chunked framing.
    headers = {**request.shared, **request.headers, "Content-Length": str(size)}
    built = http.build_request(request.method, request.url, headers=headers)
    built.stream = _Upload(body, progress.meter(f"{request.what} up", size))
    return built


def _prepared_request(
    http: httpx.Client | httpx.AsyncClient, request: _Request, content: bytes
) -> httpx.Request:
    """What ``http.build_request`` makes of a small call, from the headers merged once.

    build_request merges the client's headers with the call's, parses the URL
    and works out Host and Content-Length on every call: a third of the
    client's own time per small call. The result is the same request, header
    for header (a client holding cookies takes build_request's way).
    """
    assert request.prepared is not None
    built = httpx.Request(
        request.method,
        request.url,
        headers=request.prepared,
        stream=httpx.ByteStream(content),
        extensions={"timeout": http.timeout.as_dict()},
    )
    headers = built.headers
    for name, value in request.headers.items():
        headers[name] = value
    headers["Content-Length"] = str(len(content))
    built.read()  # as build_request leaves it: request.content is readable
    return built


def _prepared_headers(
    http: httpx.Client | httpx.AsyncClient, url: httpx.URL, shared: Mapping[str, str]
) -> httpx.Headers | None:
    """``shared`` merged into ``http``'s headers as build_request merges them, or None.

    None when the client's headers hold one that httpx would treat specially
    (a Host, a body framing or a Cookie header set by the caller).
    """
    merged = httpx.Headers(http.headers)
    merged.update(shared)
    if any(name in merged for name in ("host", "content-length", "transfer-encoding", "cookie")):
        return None
    return httpx.Headers([(b"Host", url.netloc), *merged.raw])


class _BodyBuffer:
    """Collects a response body into one writable buffer.

    With a ``Content-Length`` (and no content encoding that changes the size)
    the buffer is allocated once (:func:`~servicewire.segments.receive_buffer`)
    and filled in place, so decoding msgpack
    arrays from it needs no further copy and yields writable views.
    """

    __slots__ = ("_data", "_expected", "_filled", "_limit", "_meter", "_request", "_status")

    def __init__(
        self, request: _Request, response: httpx.Response, limit: int, progress: Progress
    ) -> None:
        self._request = request
        self._status = response.status_code
        self._limit = limit
        self._filled = 0
        self._expected = _declared_length(response)
        if self._expected is not None and self._expected > limit:
            raise self._too_large()
        self._data = receive_buffer(self._expected or 0)
        self._meter = progress.meter(f"{request.what} down", self._expected)

    def feed(self, chunk: bytes) -> None:
        self._meter.update(len(chunk))
        end = self._filled + len(chunk)
        if end > self._limit:
            raise self._too_large()
        if self._expected is None:
            self._data += chunk  # type: ignore[operator]
        elif end > self._expected:
            raise self._error("is longer than its Content-Length")
        else:
            self._data[self._filled : end] = chunk
        self._filled = end

    def receive_directly(self, response: httpx.Response) -> bool:
        """Fill the buffer straight from the socket (:mod:`servicewire.rawbody`), if it can."""
        length = self._direct_length()
        fill = direct_reader(response, length) if length is not None else None
        if fill is None:
            return False
        self._filled = fill(memoryview(self._data).cast("B"), self._meter.update)
        return True

    async def areceive_directly(self, response: httpx.Response) -> bool:
        """:meth:`receive_directly` for the async client."""
        length = self._direct_length()
        receive = direct_receiver(response) if length is not None else None
        if receive is None:
            return False
        self._filled = await receive(memoryview(self._data).cast("B"), self._meter.update)
        return True

    def _direct_length(self) -> int | None:
        """The body's size when known up front and worth bypassing httpx's reading."""
        expected = self._expected
        return expected if expected is not None and expected >= _DIRECT_MIN else None

    def result(self) -> bytearray | memoryview:
        self._meter.close()
        if self._expected is not None and self._filled != self._expected:
            raise self._error(f"ended after {self._filled} of {self._expected} bytes")
        return self._data

    def _too_large(self) -> errors.TransportError:
        return self._error(f"exceeds the client's limit of {self._limit} bytes")

    def _error(self, problem: str) -> errors.TransportError:
        message = f"response to {self._request.what} {problem}"
        return _tagged(
            errors.TransportError(message, status=self._status), self._request.request_id
        )


def _declared_length(response: httpx.Response) -> int | None:
    """The body size to preallocate, or None when it is not known up front."""
    if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
        return None  # Content-Length counts compressed bytes; the decoded size differs.
    try:
        length = int(response.headers.get("content-length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


def _tagged(error: _E, request_id: str | None) -> _E:
    # errors.ServiceError does not declare request_id yet; every error the
    # client raises carries it so a caller can quote it to the server's admin.
    error.request_id = request_id
    return error


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _env(name: str) -> str | None:
    # An exported but empty variable counts as unset, as shells often leave them.
    return os.environ.get(name) or None


class _ServiceName:
    """A dotted service name reached by attribute sugar; calling it calls the service."""

    __slots__ = ("_call", "_name")

    def __init__(self, call: Callable[..., Any], name: str) -> None:
        self._call = call
        self._name = name

    def __getattr__(self, part: str) -> _ServiceName:
        if part.startswith("_"):
            raise AttributeError(part)
        return _ServiceName(self._call, f"{self._name}.{part}")

    def __call__(self, /, **arguments: Any) -> Any:
        # Client.call returns the value, AsyncClient.call a coroutine: the
        # sugar works for both unchanged.
        return self._call(self._name, **arguments)

    def __repr__(self) -> str:
        return f"<service {self._name!r}>"


class _BaseClient:
    """Request building and response interpretation shared by both clients."""

    # Each subclass supplies the I/O flavour of call (a value or a coroutine)
    # and of the pooled httpx client.
    call: Callable[..., Any]
    _http: httpx.Client | httpx.AsyncClient

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        codec: str = "msgpack",
        timeout: float = 60.0,
        headers: Mapping[str, str] | None = None,
        verify: ssl.SSLContext | str | bool = True,
        key_id: str | None = None,
        signing_key: str | None = None,
        use_tokens: bool = False,
        pickle_allow: Iterable[str] = (),
        compress: bool = False,
        progress: bool = False,
    ) -> None:
        url = url or _env("SERVICEWIRE_URL")
        if not url:
            raise ValueError(
                "no server URL: pass url=... or set SERVICEWIRE_URL "
                "(e.g. https://example.org/services/)"
            )
        if key is None and key_id is None and signing_key is None:
            # Nothing given here: the environment supplies the credential.
            key = _env("SERVICEWIRE_KEY")
            key_id = _env("SERVICEWIRE_KEY_ID")
            signing_key = _env("SERVICEWIRE_SIGNING_KEY")
        if key is not None and not _KEY.fullmatch(key):
            # Never echo the value: it is a secret, however malformed.
            raise ValueError("the key contains characters that cannot go in an HTTP header")
        if codec not in _CLIENT_CODECS:
            raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(_CLIENT_CODECS)}")
        try:
            parsed = httpx.URL(url if url.endswith("/") else url + "/")
        except httpx.InvalidURL as exc:
            raise ValueError(f"invalid server URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("the server URL must be an absolute http:// or https:// URL")
        if parsed.userinfo:
            # httpx would log and report such a URL verbatim; the key has its
            # own argument so that it stays out of every message.
            raise ValueError("the server URL must not contain credentials; pass key=... instead")
        self._url = str(parsed)
        self._key = key
        self._codec = (
            pickle_codec(tuple(pickle_allow)) if codec == "pickle" else _CLIENT_CODECS[codec]
        )
        # Compression pays on slow links and costs on fast ones; only the
        # caller knows which it has, so it is asked for, never assumed.
        self._encodings = compression.available() if compress else ()
        self._progress = Progress(progress)
        # The headers every call sends, but its request id.
        self._call_headers = {
            "Content-Type": self._codec.content_type,
            "Accept": self._codec.content_type,
            "Accept-Encoding": ", ".join(self._encodings) or "identity",
        }
        default_headers = {"User-Agent": _user_agent(), **(headers or {})}
        self._auth = _credential(
            key,
            key_id,
            signing_key,
            use_tokens=use_tokens,
            token_url=self._url + "_auth/token",
        )
        # Redirects are not followed: a POST would turn into a GET, and the
        # client should be pointed at the right URL instead (see _wire_error).
        self._open(
            headers=default_headers,
            timeout=timeout,
            verify=verify,
            follow_redirects=False,
            auth=self._auth,
        )
        # Set on the private attribute: the public setter copies into a plain jar.
        self._http._cookies = _Cookies()
        self._base_url = parsed
        self._call_prepared = _prepared_headers(self._http, parsed, self._call_headers)
        # Each service name called, checked and made a URL once: (URL, name for messages).
        self._call_targets: dict[str, tuple[httpx.URL, str]] = {}

    def _open(self, **options: Any) -> None:
        """Create the pooled httpx client, of the subclass's I/O flavour."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """The base URL of the services, ending in ``/``."""
        return self._url

    @property
    def codec(self) -> str:
        """The name of the codec requests are sent in: ``"msgpack"``, ``"json"`` or ``"pickle"``."""
        return self._codec.name

    def __getattr__(self, name: str) -> _ServiceName:
        # Only reached when normal lookup fails, so call/services/close and
        # every other real attribute win over a service of the same name.
        if name.startswith("_"):
            raise AttributeError(name)
        return _ServiceName(self.call, name)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} url={self._url!r} codec={self.codec!r} "
            f"credential={self._auth!r}>"
        )

    # -- the two halves of every exchange, shared by sync and async --------

    def _call_request(self, name: str, arguments: dict[str, Any]) -> _Request:
        target = self._call_targets.get(name)
        if target is None:
            target = self._call_target(name)
        request_id = uuid.uuid4().hex
        headers = {"X-Request-ID": request_id}
        # The protocol reads an empty body as "no arguments"; sending one
        # keeps argument-less calls valid in every codec.
        # When compressing, arrays that compress better byte-shuffled go so.
        compressing = bool(self._encodings)
        body: list[Segment] = (
            self._codec.encode_segments(arguments, compressing) if arguments else [b""]
        )
        if compressing:
            headers[compression.SHUFFLE_HEADER] = "1"
            if compression.worth_compressing(body, body_size(body)):
                body = list(compression.compress(body, self._encodings[0]))
                headers["Content-Encoding"] = self._encodings[0]
        return _Request(
            method="POST",
            url=target[0],
            shared=self._call_headers,
            headers=headers,
            prepared=self._call_prepared,
            body=body,
            request_id=request_id,
            codec=self._codec,
            what=target[1],
        )

    def _call_target(self, name: str) -> tuple[httpx.URL, str]:
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid service name {name!r}")
        target = (httpx.URL(self._url + name), repr(name))
        if len(self._call_targets) < _MAX_TARGETS:
            self._call_targets[name] = target
        return target

    def _discovery_request(self) -> _Request:
        request_id = uuid.uuid4().hex
        return _Request(
            method="GET",
            url=self._base_url,
            shared={},
            headers={"Accept": codecs.JSON.content_type, "X-Request-ID": request_id},
            prepared=None,
            body=None,
            request_id=request_id,
            codec=codecs.JSON,
            what="discovery",
        )

    def _service_list(self, request: _Request, listing: Any) -> list[dict[str, Any]]:
        services = listing.get("services") if isinstance(listing, dict) else None
        if not isinstance(services, list):
            raise _tagged(
                errors.TransportError("the discovery response has no services list", status=200),
                request.request_id,
            )
        return services

    def _body_buffer(self, request: _Request, response: httpx.Response) -> _BodyBuffer:
        return _BodyBuffer(request, response, RESPONSE_LIMITS.max_body_bytes, self._progress)

    def _network_error(self, request: _Request, exc: Exception) -> errors.TransportError:
        detail = self._redact(str(exc)) or type(exc).__name__
        return _tagged(
            errors.TransportError(
                f"{request.what}: could not complete {request.method} {self._url}"
                f" ({type(exc).__name__}: {detail})",
                status=0,
            ),
            request.request_id,
        )

    def _interpret(
        self,
        request: _Request,
        response: httpx.Response,
        body: bytearray | memoryview,
        started: float,
    ) -> Any:
        """Return the value a response carries, or raise the error it reports."""
        status = response.status_code
        request_id = response.headers.get("x-request-id") or request.request_id
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %d, %d bytes in %.1f ms, request id %s",
                request.method,
                request.what,
                status,
                len(body),
                (time.perf_counter() - started) * 1000,
                request_id,
            )
        content_type = response.headers.get("content-type")
        codec = codecs.codec_for_content_type(content_type) if content_type else request.codec
        if codec is not None and codec.name == "pickle":
            codec = request.codec if request.codec.name == "pickle" else None
        elif codec not in _CLIENT_CODECS.values():
            codec = None
        if 200 <= status < 300:
            if not body:
                return None
            if codec is None:
                # A service that returned its own HttpResponse (a CSV file, an
                # image) is passed through: its body is the value.
                return bytes(body)
            try:
                return codec.decode(body, RESPONSE_LIMITS)
            except errors.ServiceError as exc:
                raise _tagged(
                    errors.TransportError(
                        f"undecodable {codec.name} response to {request.what}: {exc.message}",
                        status=status,
                    ),
                    request_id,
                ) from exc
        error = self._wire_error(request, response, body, codec)
        raise _tagged(error, request_id)

    def _wire_error(
        self,
        request: _Request,
        response: httpx.Response,
        body: bytearray | memoryview,
        codec: codecs.Codec | None,
    ) -> errors.ServiceError:
        status = response.status_code
        envelope: Any = None
        if codec is not None and body:
            try:
                envelope = codec.decode(body, RESPONSE_LIMITS)
            except errors.ServiceError:
                envelope = None
        if isinstance(envelope, dict) and isinstance(envelope.get("error"), dict):
            error = errors.error_from_wire(envelope, status)
            if isinstance(error, errors.RateLimited):
                error.retry_after = _retry_after(response.headers.get("retry-after"))
            return error
        # No envelope: a proxy, a load balancer or a hidden mount answered.
        reason = response.reason_phrase or "error"
        location = response.headers.get("location")
        hint = f" (redirected to {location}: use that URL)" if location else ""
        return errors.TransportError(
            f"HTTP {status} {reason} for {request.what} from {self._url}{hint}"
            f"{self._snippet(response, body)}",
            status=status,
        )

    def _snippet(self, response: httpx.Response, body: bytearray | memoryview) -> str:
        """A short, safe excerpt of a non-protocol body for an error message."""
        if not body:
            return ""
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/"):
            return f" ({len(body)} bytes of {content_type or 'unknown type'})"
        text = " ".join(bytes(body[: _SNIPPET_CHARS * 4]).decode("utf-8", "replace").split())
        text = self._redact(text)
        if len(text) > _SNIPPET_CHARS:
            text = text[: _SNIPPET_CHARS - 1] + "…"
        return f": {text}"

    def _redact(self, text: str) -> str:
        # Servers and libraries may echo request headers (a debug page, an
        # exception string); the key must not ride along into our messages.
        return text.replace(self._key, "***") if self._key else text


class Client(_BaseClient):
    """A blocking client for one servicewire mount.

    ``url`` defaults to ``$SERVICEWIRE_URL`` and ``key`` to ``$SERVICEWIRE_KEY``
    (prefer the environment to a key in source code); the key is sent as
    ``Authorization: Bearer <key>`` and never shown in ``repr``, errors or logs.
    ``codec`` is ``"msgpack"`` (rich Python values, numpy arrays without
    copies), ``"json"``, or ``"pickle"`` for a client the site allows it
    (whole Python objects; responses are unpickled only through the
    allow-list of :mod:`servicewire.pickling`, plus the ``"module.name"``
    globals in ``pickle_allow``). ``progress=True`` shows a progress bar on
    stderr for transfers of 8 MiB or more (needs ``servicewire[progress]``).
    ``compress=True`` asks for zstd or gzip
    responses and compresses uploads, each only when the body is large and
    compressible enough to pay (for slow links; on a fast one it costs more
    than it saves). ``timeout`` bounds connecting and each wait for
    data, in seconds. ``headers`` are added to every request; ``verify`` is
    passed to httpx (a CA bundle path, an ``ssl.SSLContext`` or a bool).

    Services are called with :meth:`call` or with attribute sugar, where
    ``sw.billing.invoice_total(id=7)`` calls ``"billing.invoice_total"``.
    The client's own methods win over services of the same name: a service
    called ``call``, ``services`` or ``close`` is reached only through
    ``sw.call("call", ...)``.

    Example::

        with Client("https://example.org/services/") as sw:
            sw.add(a=1, b=2)                        # -> 3
            sw.call("science.spectrum", samples=arr)
    """

    _http: httpx.Client

    def _open(self, **options: Any) -> None:
        self._http = httpx.Client(**options)

    def call(self, name: str, /, **arguments: Any) -> Any:
        """Call the service ``name`` with keyword arguments and return its value.

        Raises the :class:`~servicewire.errors.ServiceError` subclass the
        server reported, or :class:`~servicewire.errors.TransportError` when
        no protocol answer arrived; each carries ``.request_id``. A value the
        codec cannot carry raises ``TypeError`` before anything is sent. A
        successful response in a media type other than JSON or msgpack (a
        service returning its own ``HttpResponse``) comes back as ``bytes``.
        """
        return self._send(self._call_request(name, arguments))

    def services(self) -> list[dict[str, Any]]:
        """The services this caller may call: name, doc, parameters, returns, scopes."""
        request = self._discovery_request()
        return self._service_list(request, self._send(request))

    def close(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, request: _Request) -> Any:
        started = time.perf_counter()
        try:
            response = self._http.send(
                _http_request(self._http, request, self._progress), stream=True
            )
            try:
                buffer = self._body_buffer(request, response)
                if not buffer.receive_directly(response):
                    for chunk in response.iter_bytes():
                        buffer.feed(chunk)
            finally:
                response.close()
        except (httpx.HTTPError, OSError, h11.ProtocolError) as exc:
            raise self._network_error(request, exc) from exc
        return self._interpret(request, response, buffer.result(), started)


class AsyncClient(_BaseClient):
    """The asyncio twin of :class:`Client`: the same arguments and API, awaited.

    Example::

        async with AsyncClient("https://example.org/services/") as sw:
            total = await sw.add(a=1, b=2)
            spectrum = await sw.call("science.spectrum", samples=arr)
    """

    _http: httpx.AsyncClient

    def _open(self, **options: Any) -> None:
        if _proxy_in_environment(self._url):
            # httpx applies HTTP_PROXY and its kin only to a client of its own transport.
            self._http = httpx.AsyncClient(**options)
            return
        # Plain HTTP goes through servicewire's own connections, the rest through httpx's.
        fallback = httpx.AsyncHTTPTransport(verify=options["verify"])
        self._http = httpx.AsyncClient(transport=AsyncTransport(fallback), **options)

    async def call(self, name: str, /, **arguments: Any) -> Any:
        """Call the service ``name`` with keyword arguments; see :meth:`Client.call`."""
        return await self._send(self._call_request(name, arguments))

    async def services(self) -> list[dict[str, Any]]:
        """The services this caller may call; see :meth:`Client.services`."""
        request = self._discovery_request()
        return self._service_list(request, await self._send(request))

    async def close(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _send(self, request: _Request) -> Any:
        started = time.perf_counter()
        try:
            response = await self._http.send(
                _http_request(self._http, request, self._progress), stream=True
            )
            try:
                buffer = self._body_buffer(request, response)
                if not await buffer.areceive_directly(response):
                    async for chunk in response.aiter_bytes():
                        buffer.feed(chunk)
            finally:
                await response.aclose()
        except (httpx.HTTPError, OSError, h11.ProtocolError) as exc:
            raise self._network_error(request, exc) from exc
        return self._interpret(request, response, buffer.result(), started)


def _proxy_in_environment(url: str) -> bool:
    """Whether the environment names a proxy for ``url``'s scheme (httpx reads
    the same variables; it also judges ``NO_PROXY`` then)."""
    proxies = urllib.request.getproxies()
    return bool(proxies.get(urllib.parse.urlsplit(url).scheme) or proxies.get("all"))
