"""The async client's own connections (servicewire.transport), against real servers.

The main server is a small threaded socket server on 127.0.0.1 that reads each
request by hand, so that it can also answer before reading the body, stop
reading altogether, close its connections or answer slowly. It records the
client port and a digest of every body it received, so the tests see what
arrived and whether the connection was kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from servicewire import AsyncClient, errors
from servicewire.values import packb

KEY = "sw_abcdefghijkl_" + "k" * 43


@dataclass
class Site:
    url: str = ""
    # (client port, body size, body digest) of every body read whole.
    bodies: list[tuple[int, int, str]] = field(default_factory=list)
    # Ports of connections the client closed before the server stopped reading.
    closed: list[int] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def _head(stream: Any) -> tuple[str, int] | None:
    request_line = stream.readline()
    if not request_line:
        return None
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return request_line.split()[1].decode().rsplit("/", 1)[-1], length


@pytest.fixture
def site() -> Iterator[Site]:
    state = Site()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            port = self.client_address[1]
            while (head := _head(self.rfile)) is not None:
                name, length = head
                if name == "early":
                    # Refuse before reading the body, as a size limit does.
                    body = json.dumps(
                        {"error": {"type": "PayloadTooLarge", "message": "no", "details": None}}
                    ).encode()
                    self.wfile.write(
                        b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                        b"Connection: close\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
                    )
                    return
                if name == "stall":
                    # Read nothing: the client's sending waits until it gives up.
                    state.release.wait(30)
                    self.connection.settimeout(5)
                    try:
                        while self.connection.recv(1 << 20):
                            pass
                    except OSError:
                        pass
                    state.closed.append(port)
                    return
                body = self.rfile.read(length)
                state.bodies.append((port, len(body), hashlib.sha256(body).hexdigest()))
                answer = packb(len(body))
                if name == "slow":
                    time.sleep(1.0)
                if name == "chunked":
                    # No Content-Length: the body comes in chunks of a few bytes.
                    pieces = [answer[i : i + 1] for i in range(len(answer))]
                    chunks = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces)
                    self.wfile.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/msgpack\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n%b0\r\n\r\n" % chunks
                    )
                    continue
                closing = b"Connection: close\r\n" if name == "closing" else b""
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/msgpack\r\n%b"
                    b"Content-Length: %d\r\n\r\n%b" % (closing, len(answer), answer)
                )
                if name in ("closing", "hangup"):
                    # "hangup" closes without a word, as a server's keep-alive timeout does.
                    return

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/services/"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
    thread.join(10)


def _count_direct(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record each large upload that the transport sent from the body's own buffers."""
    from servicewire import client

    taken: list[bool] = []
    original = client._Upload.finished

    def spy(self: Any) -> None:
        taken.append(True)
        original(self)

    monkeypatch.setattr(client._Upload, "finished", spy)
    return taken


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(packb({"data": array})).hexdigest()


def test_a_large_upload_arrives_whole_and_the_connection_is_kept(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = _count_direct(monkeypatch)
    arrays = [np.random.default_rng(seed).normal(size=1_500_000) for seed in range(3)]

    async def calls() -> list[Any]:
        async with AsyncClient(site.url, KEY) as sw:
            answers = []
            for array in arrays:
                answers.append(await sw.up(data=array))
                answers.append(await sw.small(a=1))
            return answers

    answers = asyncio.run(calls())
    assert taken == [True, True, True]
    sizes = [size for _, size, _ in site.bodies]
    assert answers == sizes
    assert [digest for _, _, digest in site.bodies[::2]] == [_digest(a) for a in arrays]
    # Six calls, one connection: h11 saw each body end, so it was pooled.
    assert len({port for port, _, _ in site.bodies}) == 1


def test_progress_counts_every_byte_sent_directly(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from servicewire import progress

    counted: dict[str, list[int]] = {}
    closed: list[str] = []

    class Counting(progress.Meter):
        def __init__(self, what: str) -> None:
            self.what = what
            counted[what] = []

        def update(self, count: int) -> None:
            counted[self.what].append(count)

        def close(self) -> None:
            closed.append(self.what)

    monkeypatch.setattr(progress.Progress, "meter", lambda self, what, total: Counting(what))
    taken = _count_direct(monkeypatch)
    array = np.ones(3_000_000)

    async def call() -> Any:
        async with AsyncClient(site.url, KEY, progress=True) as sw:
            return await sw.up(data=array)

    size = asyncio.run(call())
    assert taken == [True]
    assert sum(counted["'up' up"]) == size == site.bodies[0][1]
    assert "'up' up" in closed


def test_an_answer_before_the_body_is_read_is_the_servers_error(
    site: Site,
) -> None:
    array = np.ones(4_000_000)  # 32 MB: more than the socket buffers take in

    async def calls() -> Any:
        async with AsyncClient(site.url, KEY) as sw:
            with pytest.raises(errors.ServiceError) as raised:
                await sw.early(data=array)
            return raised.value, await sw.up(data=array)

    error, size = asyncio.run(calls())
    # The server's own answer, as the blocking Client reports it.
    assert isinstance(error, errors.ServiceError) and error.status == 413
    assert error.message == "no"
    assert size == len(packb({"data": array}))
    assert len(site.bodies) == 1


def test_a_cancelled_upload_closes_its_connection(site: Site) -> None:
    array = np.ones(4_000_000)

    async def calls() -> int:
        async with AsyncClient(site.url, KEY) as sw:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(sw.stall(data=array), 0.5)
            site.release.set()
            size: int = await sw.up(data=array)
            return size

    size = asyncio.run(calls())
    assert size == len(packb({"data": array}))
    # The cancelled call's connection was closed, not handed to the next call
    # with half a body in it (which the server would have read as a request).
    assert len(site.closed) == 1 and site.closed[0] != site.bodies[0][0]
    assert len(site.bodies) == 1


def test_a_server_that_stops_reading_is_a_write_timeout(site: Site) -> None:
    array = np.ones(4_000_000)

    async def call() -> None:
        async with AsyncClient(site.url, KEY, timeout=0.5) as sw:
            await sw.stall(data=array)

    with pytest.raises(errors.TransportError, match="WriteTimeout"):
        asyncio.run(call())
    site.release.set()


def test_a_connection_the_server_closed_while_idle_is_not_reused(site: Site) -> None:
    async def calls() -> list[int]:
        async with AsyncClient(site.url, KEY) as sw:
            first = await sw.hangup(a=1)
            await asyncio.sleep(0.2)  # the server's close has arrived by now
            return [first, await sw.small(a=1), await sw.small(a=2)]

    answers = asyncio.run(calls())
    assert answers == [size for _, size, _ in site.bodies]
    ports = [port for port, _, _ in site.bodies]
    # A fresh connection for the second call, kept for the third.
    assert ports[1] != ports[0] and ports[2] == ports[1]


def test_connection_close_is_honoured(site: Site) -> None:
    async def calls() -> None:
        async with AsyncClient(site.url, KEY) as sw:
            for i in range(3):
                await sw.closing(a=i)

    asyncio.run(calls())
    assert len({port for port, _, _ in site.bodies}) == 3


def test_a_chunked_answer_is_read_whole(site: Site) -> None:
    async def calls() -> list[int]:
        async with AsyncClient(site.url, KEY) as sw:
            return [await sw.chunked(a="x" * 300), await sw.small(a=1)]

    answers = asyncio.run(calls())
    assert answers == [size for _, size, _ in site.bodies]
    assert len({port for port, _, _ in site.bodies}) == 1


def test_concurrent_calls_share_a_bounded_set_of_connections(site: Site) -> None:
    async def calls() -> list[int]:
        async with AsyncClient(site.url, KEY) as sw:
            answers: list[int] = []
            for _ in range(5):
                answers += await asyncio.gather(*(sw.small(a="y" * i) for i in range(8)))
            return answers

    answers = asyncio.run(calls())
    assert sorted(answers) == sorted(size for _, size, _ in site.bodies)
    assert len(answers) == 40
    # Eight at a time: each round reuses the connections the one before left.
    assert len({port for port, _, _ in site.bodies}) <= 8


def test_a_slow_answer_is_a_read_timeout_and_the_next_call_works(site: Site) -> None:
    async def calls() -> tuple[errors.TransportError, int]:
        async with AsyncClient(site.url, KEY, timeout=0.3) as sw:
            with pytest.raises(errors.TransportError, match="ReadTimeout") as raised:
                await sw.slow(a=1)
            return raised.value, await sw.small(a=1)

    error, answer = asyncio.run(calls())
    assert error.status == 0
    assert answer == site.bodies[-1][1]
    # The timed-out connection, with its answer still to come, was dropped.
    assert site.bodies[-1][0] != site.bodies[0][0]


def test_a_refused_connection_is_a_connect_error() -> None:
    from tests.servers import free_port

    async def call() -> None:
        async with AsyncClient(f"http://127.0.0.1:{free_port()}/services/", KEY) as sw:
            await sw.small(a=1)

    with pytest.raises(errors.TransportError, match="ConnectError"):
        asyncio.run(call())


@pytest.fixture
def tls_site(tmp_path: Any) -> Iterator[tuple[str, ssl.SSLContext]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate, and a context trusting it."""
    import datetime
    import http.server

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answer = packb({"secure": True, "size": len(body)})
            self.send_response(200)
            self.send_header("Content-Type", "application/msgpack")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(cert_file, key_file)
    server.socket = serving.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    trusting = ssl.create_default_context(cafile=str(cert_file))
    yield f"https://127.0.0.1:{server.server_port}/services/", trusting
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_https_goes_through_httpx_with_the_certificate_checked(
    tls_site: tuple[str, ssl.SSLContext],
) -> None:
    url, trusting = tls_site

    async def call(verify: ssl.SSLContext | bool) -> Any:
        async with AsyncClient(url, KEY, verify=verify) as sw:
            return await sw.small(a=1)

    assert asyncio.run(call(trusting)) == {"secure": True, "size": len(packb({"a": 1}))}
    # The same server, without the context that trusts its certificate: refused.
    with pytest.raises(errors.TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(call(True))


def test_a_proxy_named_in_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # As with httpx's own transport: HTTP_PROXY sends the call to the proxy,
    # which gets the site's whole URL on its request line.
    seen: list[bytes] = []

    class Proxy(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            seen.append(self.rfile.readline())
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Proxy) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")

            async def run() -> None:
                async with AsyncClient("http://192.0.2.1:9/services/", key=KEY) as sw:
                    await sw.call("add", a=1, b=2)

            with pytest.raises(errors.ServiceError):
                asyncio.run(asyncio.wait_for(run(), 30))
        finally:
            proxy.shutdown()
    assert seen and seen[0].startswith(b"POST http://192.0.2.1:9/services/add ")
