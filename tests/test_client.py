"""The client against a real HTTP server speaking wire protocol v1 (tests/wire_fake.py)."""

from __future__ import annotations

import asyncio
import logging
import threading
import traceback
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import numpy as np
import pytest

from servicewire import errors, values
from servicewire.client import AsyncClient, Client, _http_request, _retry_after
from tests.wire_fake import FakeServer, refused_url, serve

KEY = "sw_live_" + uuid.uuid4().hex  # unique, so a leak cannot be a coincidence


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    with serve() as server:
        yield server


@pytest.fixture(params=["msgpack", "json"])
def codec(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sw(fake: FakeServer, codec: str) -> Iterator[Client]:
    with Client(fake.url, KEY, codec=codec, timeout=5) as client:
        yield client


def run_async(url: str, work: Any, **options: Any) -> Any:
    """Run ``await work(client)`` on a fresh AsyncClient, bounded in time."""

    async def main() -> Any:
        async with AsyncClient(url, KEY, **options) as client:
            return await asyncio.wait_for(work(client), timeout=10)

    return asyncio.run(main())


# -- calling ----------------------------------------------------------------


def test_call_returns_the_decoded_value(sw: Client) -> None:
    assert sw.call("add", a=1, b=2) == 3
    assert sw.call("echo", name="bob", xs=[1, 2]) == {"name": "bob", "xs": [1, 2]}


def test_call_without_arguments_sends_an_empty_body(sw: Client, fake: FakeServer) -> None:
    assert sw.call("echo") == {}
    assert fake.last.body == b""


def test_attribute_sugar_calls_dotted_names(sw: Client, fake: FakeServer) -> None:
    assert sw.add(a=2, b=3) == 5
    assert fake.last.path == "/svc/add"
    with pytest.raises(errors.NotFound):
        sw.science.spectrum(samples=[1.0])
    assert fake.last.path == "/svc/science.spectrum"


def test_underscore_attributes_are_not_sugar(sw: Client) -> None:
    with pytest.raises(AttributeError):
        sw._private  # noqa: B018
    with pytest.raises(AttributeError):
        sw.science._private  # noqa: B018


def test_client_methods_win_over_service_names(sw: Client, fake: FakeServer) -> None:
    assert callable(sw.services) and sw.services.__name__ == "services"
    with pytest.raises(errors.NotFound):
        sw.call("call", x=1)
    assert fake.last.path == "/svc/call"


def test_invalid_names_are_refused_before_sending(sw: Client) -> None:
    for name in ("../admin", "a/b", "", "a..b", "a b", "x?y=1"):
        with pytest.raises(ValueError, match="invalid service name"):
            sw.call(name)


def test_async_client_has_the_same_api(fake: FakeServer, codec: str) -> None:
    async def work(client: AsyncClient) -> Any:
        return (
            await client.call("add", a=1, b=2),
            await client.add(a=2, b=3),
            await client.services(),
            await asyncio.gather(*(client.call("add", a=i, b=i) for i in range(5))),
        )

    added, sugared, listing, many = run_async(fake.url, work, codec=codec)
    assert (added, sugared, many) == (3, 5, [0, 2, 4, 6, 8])
    assert [service["name"] for service in listing] == ["add", "science.spectrum", "when"]


def test_async_client_raises_the_same_errors(fake: FakeServer) -> None:
    async def work(client: AsyncClient) -> Any:
        return await client.call("error", type="Forbidden", status=403, message="no")

    with pytest.raises(errors.Forbidden, match="no") as raised:
        run_async(fake.url, work)
    assert raised.value.request_id == fake.last.headers["x-request-id"]


def test_arrays_come_back_writable(sw: Client, codec: str) -> None:
    samples = np.arange(12, dtype=np.float64).reshape(3, 4)
    result = sw.call("echo", samples=samples)["samples"]
    if codec == "json":
        assert result == samples.tolist()
        return
    assert isinstance(result, np.ndarray)
    assert result.dtype == samples.dtype and result.shape == samples.shape
    np.testing.assert_array_equal(result, samples)
    assert result.flags.writeable
    result[0, 0] = 42.0  # must not raise: the buffer is the client's bytearray
    base: Any = result
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    # A view into the received body, not a copy of it.
    assert isinstance(base, memoryview) and isinstance(base.obj, bytearray)


def test_arrays_stay_writable_on_the_unsized_paths(fake: FakeServer) -> None:
    with Client(fake.url, KEY, codec="msgpack") as client:
        results = [
            client.call(name, samples=np.ones(5))["samples"] for name in ("chunked", "gzipped")
        ]
    for result in results:
        assert result.flags.writeable
        np.testing.assert_array_equal(result, np.ones(5))


def test_bodies_without_content_length_and_compressed_bodies(sw: Client) -> None:
    payload = {"text": "x" * 1000, "n": list(range(50))}
    assert sw.call("chunked", **payload) == payload
    assert sw.call("gzipped", **payload) == payload


def test_pickle_responses_are_unpickled_only_by_a_pickle_client_and_never_by_pickle_loads(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    def trap(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the client used pickle's own unpickler")

    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, trap)
    # A client that did not ask for pickle hands the body back unread.
    with Client(fake.url, KEY, codec="msgpack") as client:
        assert isinstance(client.call("pickled"), bytes)
    # A pickle client reads it, through the allow-list (the body is a plain dict).
    with Client(fake.url, KEY, codec="pickle") as client:
        assert client.call("pickled") == {"unpickled": True}


def test_a_passed_through_response_is_returned_as_bytes(sw: Client) -> None:
    assert sw.call("csv") == b"a,b\n1,2\n"


def test_one_keep_alive_connection_is_reused(fake: FakeServer) -> None:
    with Client(fake.url, KEY) as client:
        for i in range(3):
            client.call("add", a=i, b=i)
        ports = {seen.client_port for seen in fake.requests[-3:]}
    assert len(ports) == 1


# -- what goes on the wire --------------------------------------------------


def test_request_headers(sw: Client, fake: FakeServer, codec: str) -> None:
    sw.call("add", a=1, b=2)
    first = fake.last.headers
    sw.call("add", a=1, b=2)
    second = fake.last.headers
    content_type = {"msgpack": "application/msgpack", "json": "application/json"}[codec]
    assert fake.last.method == "POST"
    assert first["content-type"] == first["accept"] == content_type
    assert first["authorization"] == f"Bearer {KEY}"
    assert first["user-agent"].startswith("servicewire/")
    assert "python-httpx/" in first["user-agent"]
    assert len(first["x-request-id"]) == 32
    int(first["x-request-id"], 16)
    assert first["x-request-id"] != second["x-request-id"]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"key": KEY, "codec": "json"},
        {"headers": {"X-Tenant": "acme", "Accept": "text/plain", "User-Agent": "tool/1"}},
        {"compress": True},
    ],
)
def test_a_call_is_the_request_httpx_would_build(options: dict[str, Any]) -> None:
    # Small calls skip build_request (servicewire.client._prepared_request);
    # what goes out must not change by a header, nor by the headers' order.
    with Client("http://127.0.0.1:8000/svc/", **options) as client:
        planned = client._call_request("add", {"a": 1, "b": 2})
        assert planned.body is not None
        sent = _http_request(client._http, planned, client._progress)
        built = client._http.build_request(
            "POST",
            str(planned.url),
            content=b"".join(planned.body),
            headers={**planned.shared, **planned.headers},
        )
    assert sent.headers.raw == built.headers.raw
    assert (sent.method, sent.url, sent.content) == (built.method, built.url, built.content)
    assert sent.extensions == built.extensions


class _CookieHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cookies: ClassVar[list[str | None]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.cookies.append(self.headers.get("Cookie"))
        body = values.packb(len(self.cookies))
        self.send_response(200)
        self.send_header("Content-Type", "application/msgpack")
        self.send_header("Content-Length", str(len(body)))
        if len(self.cookies) == 1:
            self.send_header("Set-Cookie", "node=b7; Path=/")
        self.end_headers()
        self.wfile.write(body)


def test_a_cookie_the_server_sets_is_sent_back() -> None:
    # A load balancer's sticky-session cookie, say: kept and returned by httpx
    # as before, although responses without one skip httpx's cookie parsing.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CookieHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        with Client(f"http://127.0.0.1:{server.server_address[1]}/svc/", timeout=5) as client:
            assert [client.call("add", a=1, b=2) for _ in range(3)] == [1, 2, 3]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert _CookieHandler.cookies == [None, "node=b7", "node=b7"]


def test_no_authorization_header_without_a_key(fake: FakeServer, monkeypatch: Any) -> None:
    monkeypatch.delenv("SERVICEWIRE_KEY", raising=False)
    with Client(fake.url) as client:
        client.call("add", a=1, b=1)
    assert "authorization" not in fake.last.headers


def test_extra_headers_are_sent(fake: FakeServer) -> None:
    with Client(fake.url, headers={"X-Tenant": "acme"}) as client:
        client.call("add", a=1, b=1)
    assert fake.last.headers["x-tenant"] == "acme"


def test_services_lists_discovery(sw: Client, fake: FakeServer) -> None:
    listing = sw.services()
    assert fake.last.method == "GET" and fake.last.path == "/svc/"
    assert fake.last.headers["accept"] == "application/json"
    assert listing[0]["name"] == "add"
    assert listing[0]["parameters"]["properties"]["a"] == {"type": "integer"}


# -- configuration ----------------------------------------------------------


def test_url_and_key_default_to_the_environment(fake: FakeServer, monkeypatch: Any) -> None:
    monkeypatch.setenv("SERVICEWIRE_URL", fake.url.rstrip("/"))
    monkeypatch.setenv("SERVICEWIRE_KEY", KEY)
    with Client() as client:
        assert client.url == fake.url  # normalised to end with "/"
        assert client.call("add", a=1, b=1) == 2
    assert fake.last.headers["authorization"] == f"Bearer {KEY}"
    assert fake.last.path == "/svc/add"


def test_missing_url_is_a_clear_error(monkeypatch: Any) -> None:
    monkeypatch.delenv("SERVICEWIRE_URL", raising=False)
    with pytest.raises(ValueError, match="SERVICEWIRE_URL"):
        Client()
    with pytest.raises(ValueError, match="SERVICEWIRE_URL"):
        AsyncClient()


@pytest.mark.parametrize("url", ["example.org/services", "ftp://example.org/", "http://"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        Client(url)


def test_unknown_codec_is_refused() -> None:
    with pytest.raises(ValueError, match="yaml"):
        Client("http://127.0.0.1:1/", codec="yaml")


def test_a_malformed_key_is_refused_without_echoing_it() -> None:
    bad = KEY + "\r\nX-Evil: 1"
    with pytest.raises(ValueError) as raised:
        Client("http://127.0.0.1:1/", bad)
    assert KEY not in str(raised.value) and KEY not in repr(raised.value.args)


# -- errors -----------------------------------------------------------------

WIRE_TYPES = [
    (errors.BadRequest, 400),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.MethodNotAllowed, 405),
    (errors.NotAcceptable, 406),
    (errors.PayloadTooLarge, 413),
    (errors.UnsupportedMediaType, 415),
    (errors.ValidationError, 422),
    (errors.RateLimited, 429),
    (errors.InternalError, 500),
]


@pytest.mark.parametrize(("cls", "status"), WIRE_TYPES)
def test_each_wire_error_is_raised_as_its_class(
    sw: Client, fake: FakeServer, cls: type[errors.ServiceError], status: int
) -> None:
    details = {"a": "missing"}
    with pytest.raises(cls) as raised:
        sw.call("error", type=cls.__name__, status=status, message="it failed", details=details)
    error = raised.value
    assert type(error) is cls
    assert (error.status, error.message, error.details) == (status, "it failed", details)
    assert error.request_id == fake.last.headers["x-request-id"]


def test_an_unknown_remote_type_is_a_service_error(sw: Client) -> None:
    with pytest.raises(errors.ServiceError) as raised:
        sw.call("error", type="Overdrawn", status=409, message="too low", details={"m": 5})
    error = raised.value
    assert type(error) is errors.ServiceError
    assert (error.type, error.status, error.message, error.details) == (
        "Overdrawn",
        409,
        "too low",
        {"m": 5},
    )
    assert str(error) == "Overdrawn (409): too low"


def test_rate_limited_carries_retry_after(sw: Client) -> None:
    with pytest.raises(errors.RateLimited) as raised:
        sw.call("limited")
    assert raised.value.retry_after == 7.0
    assert raised.value.status == 429


def test_retry_after_parses_seconds_and_dates() -> None:
    assert _retry_after("2.5") == 2.5
    assert _retry_after(None) is None
    assert _retry_after("soon") is None
    assert _retry_after("nan") is None
    assert _retry_after("-3") == 0.0
    later = datetime.now(UTC) + timedelta(seconds=100)
    parsed = _retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert parsed is not None and 90 < parsed <= 100


def test_an_html_404_is_a_transport_error(sw: Client, fake: FakeServer) -> None:
    with pytest.raises(errors.TransportError) as raised:
        sw.call("hidden")
    error = raised.value
    assert error.status == 404
    assert "404" in error.message and "Not Found" in error.message
    assert error.request_id == fake.last.headers["x-request-id"]


def test_a_proxy_502_is_a_short_transport_error(sw: Client) -> None:
    with pytest.raises(errors.TransportError) as raised:
        sw.call("gateway")
    error = raised.value
    assert error.status == 502
    assert "upstream unavailable" in error.message
    assert len(error.message) < 350


def test_a_redirect_is_not_followed_but_explained(sw: Client, fake: FakeServer) -> None:
    with pytest.raises(errors.TransportError) as raised:
        sw.call("moved")
    assert raised.value.status == 301
    assert "redirected to https://" in raised.value.message
    assert fake.last.path == "/svc/moved"  # nothing was sent to the new location


def test_a_refused_connection_is_a_transport_error() -> None:
    with (
        refused_url() as url,
        Client(url, KEY, timeout=2) as client,
        pytest.raises(errors.TransportError) as raised,
    ):
        client.call("add", a=1, b=2)
    error = raised.value
    assert error.status == 0
    assert url in error.message
    assert error.request_id and len(error.request_id) == 32
    assert error.__cause__ is not None  # chained from the httpx error


def test_a_timeout_is_a_transport_error(fake: FakeServer) -> None:
    with (
        Client(fake.url, KEY, timeout=0.2) as client,
        pytest.raises(errors.TransportError) as raised,
    ):
        client.call("slow", seconds=2)
    assert raised.value.status == 0
    assert "Timeout" in raised.value.message


def test_a_truncated_body_is_a_transport_error(sw: Client) -> None:
    with pytest.raises(errors.TransportError) as raised:
        sw.call("truncated")
    assert raised.value.status in (0, 200)


def test_an_async_refused_connection_is_a_transport_error() -> None:
    async def work(client: AsyncClient) -> Any:
        return await client.call("add", a=1, b=2)

    with refused_url() as url, pytest.raises(errors.TransportError) as raised:
        run_async(url, work, timeout=2)
    assert raised.value.status == 0


# -- the key never leaks ----------------------------------------------------


def test_repr_hides_the_key(fake: FakeServer) -> None:
    with Client(fake.url, KEY) as client:
        assert KEY not in repr(client)
        assert KEY not in repr(client.science.spectrum)
        assert "credential=<BearerAuth key=set>" in repr(client)


def test_credentials_in_the_url_are_refused_without_echoing_them(fake: FakeServer) -> None:
    url = fake.url.replace("http://", f"http://user:{KEY}@")
    with pytest.raises(ValueError, match="credentials") as raised:
        Client(url)
    assert KEY not in str(raised.value)


def _exception_texts(error: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(error)), str(error), repr(error)]
    texts += [repr(arg) for arg in error.args]
    texts.append(repr(vars(error)))
    return texts


def test_the_key_appears_in_no_log_and_no_exception(
    fake: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("httpx", "httpcore", "servicewire", "servicewire.client"):
        caplog.set_level(logging.DEBUG, logger=name)
    failures: list[errors.ServiceError] = []

    def attempt(client: Client, name: str, **arguments: Any) -> None:
        try:
            client.call(name, **arguments)
        except errors.ServiceError as error:
            failures.append(error)

    with Client(fake.url, KEY, timeout=0.3) as client:
        client.call("add", a=1, b=2)
        client.services()
        attempt(client, "error", type="Unauthorized", status=401, message="bad key")
        attempt(client, "error", type="Overdrawn", status=409, message="x")
        attempt(client, "limited")
        attempt(client, "hidden")
        attempt(client, "gateway")
        attempt(client, "debug_page")
        attempt(client, "slow", seconds=2)
        attempt(client, "truncated")
    with refused_url() as url, Client(url, KEY, timeout=1) as client:
        attempt(client, "add", a=1, b=2)

    async def work(client: AsyncClient) -> Any:
        for name in ("hidden", "debug_page", "gateway"):
            try:
                await client.call(name)
            except errors.ServiceError as error:
                failures.append(error)

    run_async(fake.url, work)

    assert len(failures) == 12
    assert any("***" in error.message for error in failures)  # debug page redacted
    for error in failures:
        for text in _exception_texts(error):
            assert KEY not in text, text
    loggers = {record.name.split(".")[0] for record in caplog.records}
    assert {"httpx", "httpcore", "servicewire"} <= loggers, "logging was not captured"
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in str(record.args)
    assert KEY not in caplog.text


def test_explicit_key_wins_over_a_signing_key_in_the_environment(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICEWIRE_KEY_ID", "AbCdEfGhIjKl")
    monkeypatch.setenv("SERVICEWIRE_SIGNING_KEY", "/nonexistent/key.pem")
    with Client(fake.url, KEY) as client:
        assert "BearerAuth" in repr(client)
