"""A tiny, real HTTP server that speaks wire protocol v1 with canned behaviour.

The client tests run against it until the Django views exist: it listens on
127.0.0.1 on a free port, in a daemon thread, and records every request it
gets so tests can check headers and connection reuse. Services (under
``/svc/``):

- ``echo``: returns the arguments map unchanged.
- ``add``: returns ``a + b``.
- ``error``: answers with the envelope ``{"type", "message", "details"}`` and
  ``status`` taken from the arguments.
- ``limited``: 429 ``RateLimited`` with ``Retry-After: 7``.
- ``hidden``: an HTML 404, as a mount hidden from the unauthenticated gives.
- ``gateway``: a 502 with a long plain-text body, as a proxy gives.
- ``debug_page``: a 500 HTML page that quotes the request's Authorization.
- ``slow``: sleeps ``seconds`` (at most 5) before answering.
- ``truncated``: promises more bytes than it sends, then closes.
- ``chunked``: echoes the arguments with chunked transfer encoding.
- ``gzipped``: echoes the arguments gzip-compressed.
- ``pickled``: answers 200 with a pickle content type.
- ``csv``: answers 200 with ``text/csv``, as a service returning its own response.
- ``moved``: a 301 to the https:// twin of the URL, as a site forcing TLS does.
"""

from __future__ import annotations

import gzip
import json
import pickle
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from servicewire import codecs

MOUNT = "/svc/"

SERVICES: list[dict[str, Any]] = [
    {
        "name": "add",
        "doc": "Add two integers.\n\nLonger explanation.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
        "returns": {"type": "integer"},
        "scopes": [],
    },
    {
        "name": "science.spectrum",
        "doc": "Power spectrum of a signal.",
        "parameters": {
            "type": "object",
            "properties": {
                "samples": {"type": "array", "items": {"type": "number"}},
                "window": {"type": "integer", "default": 256},
            },
            "required": ["samples"],
        },
        "returns": {"type": "object"},
        "scopes": ["science"],
    },
    {
        "name": "when",
        "doc": "",
        "parameters": {
            "type": "object",
            "properties": {
                "at": {"anyOf": [{"type": "string", "format": "date-time"}]},
                "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {}], "items": False},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                "kind": {"$ref": "#/$defs/Kind"},
            },
        },
        "returns": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "scopes": [],
    },
]


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int


@dataclass
class FakeServer:
    """Handle on a running fake: its base URL and what it has seen."""

    url: str
    requests: list[Seen] = field(default_factory=list)

    @property
    def last(self) -> Seen:
        return self.requests[-1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._record(b"")
        if self.path != MOUNT:
            self._raw(404, "text/html", b"<html><body>Not Found</body></html>")
            return
        self._raw(200, "application/json", json.dumps({"services": SERVICES}).encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self._record(body)
        if not self.path.startswith(MOUNT):
            self._raw(404, "text/html", b"<html><body>Not Found</body></html>")
            return
        name = self.path[len(MOUNT) :]
        request_codec = codecs.codec_for_content_type(self.headers.get("Content-Type"))
        if request_codec is None:
            self._error(415, "UnsupportedMediaType", "unknown content type", None, codecs.JSON)
            return
        reply = codecs.negotiate(self.headers.get("Accept"), request_codec) or codecs.JSON
        arguments = request_codec.decode(bytearray(body)) if body else {}
        handler = getattr(self, "service_" + name.replace(".", "_"), None)
        if handler is None:
            self._error(404, "NotFound", f"no service {name!r}", None, reply)
            return
        handler(arguments, reply)

    # -- services -----------------------------------------------------------

    def service_echo(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        self._raw(200, reply.content_type, reply.encode(arguments))

    def service_add(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        self._raw(200, reply.content_type, reply.encode(arguments["a"] + arguments["b"]))

    def service_error(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        self._error(
            arguments["status"],
            arguments["type"],
            arguments.get("message", ""),
            arguments.get("details"),
            reply,
        )

    def service_limited(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        self._error(429, "RateLimited", "slow down", None, reply, {"Retry-After": "7"})

    def service_hidden(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        page = b"<!DOCTYPE html><html><head><title>Not Found</title></head></html>"
        self._raw(404, "text/html; charset=utf-8", page)

    def service_gateway(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        self._raw(502, "text/plain", b"Bad gateway: upstream unavailable. " + b"x" * 5000)

    def service_debug_page(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        quoted = self.headers.get("Authorization", "").encode()
        self._raw(500, "text/html", b"<h1>Server Error</h1> HTTP_AUTHORIZATION=" + quoted)

    def service_slow(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        time.sleep(min(float(arguments.get("seconds", 1)), 5.0))
        self._raw(200, reply.content_type, reply.encode("late"))

    def service_truncated(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        self.send_response(200)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", "1000")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.encode("x" * 10)[:5])
        self.close_connection = True

    def service_chunked(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        payload = reply.encode(arguments)
        self.send_response(200)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self._request_id_header()
        self.end_headers()
        for start in range(0, len(payload), 7):
            piece = payload[start : start + 7]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def service_gzipped(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        self._raw(
            200,
            reply.content_type,
            gzip.compress(reply.encode(arguments)),
            {"Content-Encoding": "gzip"},
        )

    def service_pickled(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        self._raw(200, "application/x-python-pickle", pickle.dumps({"unpickled": True}))

    def service_csv(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        self._raw(200, "text/csv", b"a,b\n1,2\n")

    def service_moved(self, arguments: dict[str, Any], reply: codecs.Codec) -> None:
        location = f"https://{self.headers.get('Host')}{self.path}"
        self._raw(301, "text/html", b"<html>Moved</html>", {"Location": location})

    # -- plumbing -----------------------------------------------------------

    def _record(self, body: bytes) -> None:
        self.server.fake.requests.append(
            Seen(
                method=self.command,
                path=self.path,
                headers={key.lower(): value for key, value in self.headers.items()},
                body=body,
                client_port=self.client_address[1],
            )
        )

    def _request_id_header(self) -> None:
        request_id = self.headers.get("X-Request-ID")
        if request_id:
            self.send_header("X-Request-ID", request_id)

    def _error(
        self,
        status: int,
        type_name: str,
        message: str,
        details: Any,
        codec: codecs.Codec,
        extra: dict[str, str] | None = None,
    ) -> None:
        envelope = {"error": {"type": type_name, "message": message, "details": details}}
        self._raw(status, codec.content_type, codec.encode(envelope), extra)

    def _raw(
        self, status: int, content_type: str, body: bytes, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._request_id_header()
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a sleeping handler must not hold up the test run
    fake: FakeServer


@contextmanager
def serve() -> Iterator[FakeServer]:
    """Run the fake on 127.0.0.1 at a free port for the duration of the block."""
    server = _Server(("127.0.0.1", 0), _Handler)
    host, port = server.server_address[:2]
    fake = FakeServer(url=f"http://{host!s}:{port}{MOUNT}")
    server.fake = fake
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def refused_url() -> Iterator[str]:
    """A URL on which nothing listens: a port bound, then released."""
    server = _Server(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    server.server_close()
    yield f"http://127.0.0.1:{port}/svc/"
