"""servicewire under ASGI: the test site served by uvicorn through ``servicewire.asgi``.

A module fixture writes a settings module and an ASGI entry point into a
temporary folder, migrates a fresh SQLite database there, makes a key with the
management command and serves the site with uvicorn on 127.0.0.1, once with
uvicorn's HTTP protocol and once with servicewire's. Every call crosses a
real socket, with both clients. Two behaviours no ASGI server can
show over a socket (a body that ends before its ``Content-Length``) are
checked by calling the handler directly.
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import os
import sqlite3
import subprocess
import sys
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from servicewire import AsyncClient, Client, codecs
from servicewire.errors import BadRequest, NotFound, PayloadTooLarge, Unauthorized
from tests.servers import django_command, free_port, stop, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
MAX_BODY = 8 * 2**20
MSGPACK = "application/msgpack"

SETTINGS = """
from tests.settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": @DATABASE@,
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "timeout": 20},
    }
}
SERVICEWIRE = {**SERVICEWIRE, "MAX_BODY_BYTES": @MAX_BODY@}  # noqa: F405
"""

ENTRY = """
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asgi_site_settings")

from servicewire.asgi import get_asgi_application

application = get_asgi_application()
"""


@dataclass
class Site:
    url: str
    database: Path
    key: str

    def audit(self, request_id: str) -> list[tuple[str, int, str, int]]:
        """The audit entries of one request: (service, status, error type, bytes in)."""
        with sqlite3.connect(self.database, timeout=20) as db:
            return db.execute(
                "SELECT service, status, error_type, bytes_in FROM servicewire_auditentry"
                " WHERE request_id = ?",
                (request_id,),
            ).fetchall()


@pytest.fixture(scope="module", params=["httptools", "servicewire.uvicorn:HttpProtocol"])
def site(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Site]:
    """The site under uvicorn's own HTTP protocol, and under servicewire's,
    which reads large call bodies straight into their buffer."""
    folder = tmp_path_factory.mktemp("asgi-site")
    database = folder / "site.sqlite3"
    settings = SETTINGS.replace("@DATABASE@", repr(str(database)))
    (folder / "asgi_site_settings.py").write_text(settings.replace("@MAX_BODY@", str(MAX_BODY)))
    (folder / "asgi_site.py").write_text(ENTRY)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "asgi_site_settings",
        "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]),
    }

    def manage(*args: str) -> str:
        return django_command(env, folder, *args)

    manage("migrate", "--verbosity", "0")
    manage("servicewire", "client", "add", "asgi-desktop", "--scope", "science")
    key = manage("servicewire", "key", "create", "asgi-desktop").strip().splitlines()[-1]
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "asgi_site:application", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning", "--timeout-graceful-shutdown", "5"]
    command += ["--http", request.param]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=folder,
    )
    try:
        wait_for_port(port, process, timeout=60)
        yield Site(f"http://127.0.0.1:{port}/services/", database, key)
    finally:
        stop(process)


def test_sync_and_async_services_with_both_clients(site: Site) -> None:
    with Client(site.url, site.key, timeout=60) as sw:
        assert sw.add(a=2, b=3) == 5
        assert sw.slow_add(a=4, b=5) == 9

    async def both() -> tuple[Any, Any]:
        async with AsyncClient(site.url, site.key, timeout=60) as sw:
            return await sw.add(a=20, b=1), await sw.slow_add(a=40, b=2)

    assert asyncio.run(both()) == (21, 42)


def test_refusals_keep_their_statuses(site: Site) -> None:
    with Client(site.url, timeout=60, key="sw_bogus_key") as sw, pytest.raises(Unauthorized):
        sw.add(a=1, b=1)
    with Client(site.url, site.key, timeout=60) as sw, pytest.raises(NotFound):
        sw.call("no.such.service")


def test_large_arrays_round_trip_exactly(site: Site) -> None:
    # 24 MB: far above Django's FILE_UPLOAD_MAX_MEMORY_SIZE, under the site's limit.
    samples = np.random.default_rng(3).normal(size=(1000, 375)).astype(np.float64) * 1e300
    with Client(site.url, site.key, timeout=120) as sw:
        doubled = sw.science.double(samples=samples[:, :370])
    np.testing.assert_array_equal(doubled, samples[:, :370] * 2)
    assert doubled.dtype == np.float64 and doubled.flags.writeable

    fortran = np.asfortranarray(np.arange(2_000_000, dtype=np.int32).reshape(1000, 2000))

    async def round_trip() -> Any:
        async with AsyncClient(site.url, site.key, timeout=120) as sw:
            return await sw.call("echo", value={"a": fortran, "tail": b"x" * 100_000})

    echoed = asyncio.run(round_trip())
    np.testing.assert_array_equal(echoed["a"], fortran)
    assert echoed["a"].dtype == np.int32 and echoed["tail"] == b"x" * 100_000


def test_a_body_over_the_limit_is_refused_with_413(site: Site) -> None:
    too_big = np.zeros(MAX_BODY // 8 + 1024)
    with Client(site.url, site.key, timeout=120) as sw:
        with pytest.raises(PayloadTooLarge):
            sw.echo(value=too_big)
        # The refused body was discarded, not mistaken for the next request.
        assert sw.add(a=1, b=2) == 3


def test_a_huge_declared_body_is_refused_before_it_is_sent(site: Site) -> None:
    """The 413 comes while the client has sent nothing but headers: the server
    neither waits for ten gigabytes nor stores them."""
    host, port = httpx.URL(site.url).host, httpx.URL(site.url).port
    request_id = f"huge-{uuid.uuid4().hex}"
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.putrequest("POST", "/services/echo")
        for name, value in {
            "Authorization": f"Bearer {site.key}",
            "Content-Type": MSGPACK,
            "Content-Length": str(10 * 2**30),
            "X-Request-ID": request_id,
        }.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert response.getheader("X-Request-ID") == request_id
        error = codecs.MSGPACK.decode(response.read(), codecs.DEFAULT_LIMITS)["error"]
        assert error["type"] == "PayloadTooLarge"
    finally:
        connection.close()
    assert site.audit(request_id) == [("echo", 413, "PayloadTooLarge", 0)]


def _post(site: Site, service: str, body: bytes, request_id: str) -> httpx.Response:
    """A raw msgpack call with the site's key, under our own request id."""
    return httpx.post(
        site.url + service,
        content=body,
        headers={
            "Authorization": f"Bearer {site.key}",
            "Content-Type": MSGPACK,
            "X-Request-ID": request_id,
        },
        timeout=60,
    )


def test_a_truncated_large_body_is_400(site: Site) -> None:
    whole = codecs.MSGPACK.encode({"value": np.arange(100_000, dtype=np.float64)})
    request_id = f"cut-{uuid.uuid4().hex}"
    response = _post(site, "echo", whole[: len(whole) - 1000], request_id)
    assert response.status_code == 400
    assert response.headers["X-Request-ID"] == request_id
    assert site.audit(request_id) == [("echo", 400, "BadRequest", len(whole) - 1000)]


def test_every_call_leaves_one_audit_entry(site: Site) -> None:
    body = codecs.MSGPACK.encode({"samples": np.ones(50_000)})
    request_id = f"audit-{uuid.uuid4().hex}"
    response = _post(site, "science.double", body, request_id)
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id
    doubled = codecs.MSGPACK.decode(response.content, codecs.DEFAULT_LIMITS)
    np.testing.assert_array_equal(doubled, np.full(50_000, 2.0))
    assert site.audit(request_id) == [("science.double", 200, "", len(body))]


# Straight into the handler: what an ASGI server may do, but uvicorn cannot be
# made to do over a socket (it reports a short body as a disconnect).


def _echo_headers(key: str, length: int) -> dict[str, str]:
    return {
        "Host": "127.0.0.1",
        "Authorization": f"Bearer {key}",
        "Content-Type": MSGPACK,
        "Content-Length": str(length),
    }


async def _serve(
    scope_headers: dict[str, str],
    messages: list[dict[str, Any]],
    leaves_after: int = 0,
    path: str = "/services/echo",
    application: Any = None,
    extensions: dict[str, Any] | None = None,
) -> list[Any]:
    """What ``application`` (a new handler by default) sends for ``messages``
    posted to ``path``; with ``leaves_after``, the client disconnects once
    that many pieces of the answer have come."""
    from servicewire.asgi import get_asgi_application

    application = application or get_asgi_application()
    sent: list[Any] = []
    done = asyncio.Event()
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        # Bounded by the wait_for around the whole request below.
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()
        if leaves_after and len(sent) > leaves_after:
            done.set()
            await asyncio.sleep(0)  # the disconnect is noticed while the answer goes out

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in scope_headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    if extensions is not None:
        scope["extensions"] = extensions
    await asyncio.wait_for(application(scope, receive, send), 60)
    return sent


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("size", [1000, 200_000], ids=["small", "large"])
def test_a_body_shorter_than_its_content_length_is_400(key: str, size: int) -> None:
    whole = codecs.MSGPACK.encode({"value": b"v" * size})
    headers = _echo_headers(key, len(whole) + 10)
    half = len(whole) // 2
    sent = asyncio.run(
        _serve(
            headers,
            [
                {"type": "http.request", "body": whole[:half], "more_body": True},
                {"type": "http.request", "body": whole[half:], "more_body": False},
            ],
        )
    )
    assert sent[0]["status"] == 400
    body = b"".join(bytes(m.get("body", b"")) for m in sent[1:])
    error = codecs.MSGPACK.decode(body, codecs.DEFAULT_LIMITS)["error"]
    assert error["type"] == BadRequest.__name__
    assert "Content-Length" in error["message"]


@pytest.mark.django_db(transaction=True)
def test_a_streamed_response_comes_whole_in_few_messages(key: str) -> None:
    value = np.arange(1_000_000, dtype=np.float64)
    whole = codecs.MSGPACK.encode({"value": value})
    headers = _echo_headers(key, len(whole))
    sent = asyncio.run(_serve(headers, [{"type": "http.request", "body": whole}]))
    assert sent[0]["status"] == 200
    bodies = [bytes(m.get("body", b"")) for m in sent[1:]]
    answer = codecs.MSGPACK.decode(b"".join(bodies), codecs.DEFAULT_LIMITS)
    np.testing.assert_array_equal(answer, value)
    # 8 MB in pieces of 512 KiB, not Django's 64 KiB ones.
    assert len(bodies) <= 8_000_000 // (512 * 1024) + 4


@pytest.mark.django_db(transaction=True)
def test_a_server_that_sends_views_gets_the_answer_uncopied(key: str) -> None:
    value = np.arange(1_000_000, dtype=np.float64)
    whole = codecs.MSGPACK.encode({"value": value})
    headers = _echo_headers(key, len(whole))
    call = [{"type": "http.request", "body": whole}]
    plain = [m.get("body", b"") for m in asyncio.run(_serve(headers, call))[1:]]
    views = [
        m.get("body", b"")
        for m in asyncio.run(_serve(headers, call, extensions={"servicewire.send_buffers": {}}))[1:]
    ]
    # Without the extension every piece is bytes, as ASGI says; with it the
    # array's pieces are views of its memory. The same bytes either way.
    assert all(type(body) is bytes for body in plain)
    large = [body for body in views if isinstance(body, memoryview)]
    assert sum(body.nbytes for body in large) >= value.nbytes
    assert b"".join(views) == b"".join(plain)
    answer = codecs.MSGPACK.decode(b"".join(views), codecs.DEFAULT_LIMITS)
    np.testing.assert_array_equal(answer, value)


@pytest.mark.django_db(transaction=True)
def test_a_large_body_is_freed_when_its_call_ends(key: str) -> None:
    # A server holds the body of each call in progress, not of every call
    # served since the garbage collector last ran (which can be several
    # large uploads): nothing of the request outlives it in a reference cycle.
    whole = codecs.MSGPACK.encode({"value": b"v" * 4_000_000})
    headers = _echo_headers(key, len(whole))
    call = [{"type": "http.request", "body": whole}]
    assert asyncio.run(_serve(headers, call))[0]["status"] == 200  # imports what it needs
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        sent = asyncio.run(_serve(headers, call))
        assert sent[0]["status"] == 200
        del sent
        left, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert left < len(whole) // 4


@pytest.mark.django_db(transaction=True)
def test_a_call_starts_and_finishes_once_in_its_request_thread(key: str) -> None:
    # servicewire's views get request_started, the middleware and the view in
    # one hop to the request's thread; the request still starts and finishes
    # exactly once, as under Django's own handler, and the answer is whole.
    from django.core import signals

    seen: list[tuple[str, str]] = []

    def started(**kwargs: Any) -> None:
        assert "scope" in kwargs
        seen.append(("started", threading.current_thread().name))

    def finished(**kwargs: Any) -> None:
        seen.append(("finished", threading.current_thread().name))

    whole = codecs.MSGPACK.encode({"value": [1, 2, 3]})
    headers = _echo_headers(key, len(whole))
    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        sent = asyncio.run(_serve(headers, [{"type": "http.request", "body": whole}]))
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert sent[0]["status"] == 200
    body = b"".join(bytes(m.get("body", b"")) for m in sent[1:])
    assert codecs.MSGPACK.decode(body, codecs.DEFAULT_LIMITS) == [1, 2, 3]
    assert [event for event, _ in seen] == ["started", "finished"]
    assert all(thread.startswith("servicewire-asgi") for _, thread in seen)


@pytest.mark.django_db(transaction=True)
def test_a_streamed_answer_stops_when_its_client_leaves(key: str) -> None:
    # A large answer is not encoded to its end for nobody: the client's
    # disconnect stops it, and the request still finishes exactly once.
    from django.core import signals

    finished: list[str] = []

    def on_finished(**kwargs: Any) -> None:
        finished.append(threading.current_thread().name)

    value = np.arange(4_000_000, dtype=np.float64)  # 32 MB: 61 pieces of 512 KiB
    whole = codecs.MSGPACK.encode({"value": value})
    headers = _echo_headers(key, len(whole))
    signals.request_finished.connect(on_finished)
    try:
        sent = asyncio.run(_serve(headers, [{"type": "http.request", "body": whole}], 3))
    finally:
        signals.request_finished.disconnect(on_finished)
    assert sent[0]["status"] == 200
    assert 3 <= len(sent) < 10
    assert len(finished) == 1
    assert finished[0].startswith("servicewire-asgi")


def _call(key: str, path: str, payload: Any = None) -> list[Any]:
    """The messages the handler sends for one call of ``path`` with ``payload``."""
    whole = codecs.MSGPACK.encode(payload if payload is not None else {})
    headers = _echo_headers(key, len(whole))
    return [headers, [{"type": "http.request", "body": whole}], path]


def _answer(sent: list[Any]) -> Any:
    assert sent[0]["status"] == 200, sent
    body = b"".join(bytes(m.get("body", b"")) for m in sent[1:])
    return codecs.MSGPACK.decode(body, codecs.DEFAULT_LIMITS)


@pytest.mark.django_db(transaction=True)
def test_an_async_service_runs_on_the_servers_loop_and_reaches_the_orm(key: str) -> None:
    # An async service is awaited on the event loop that serves the request,
    # not on a loop of its own in some thread; what it hands back to
    # synchronous code (sync_to_async, Django's async ORM) runs in the
    # request's thread, which waits for it, without deadlocking.
    from asgiref.sync import sync_to_async

    from servicewire import service
    from servicewire.models import AuditEntry, ClientApp
    from servicewire.registry import registry

    seen: dict[str, Any] = {}

    def where() -> str:
        return threading.current_thread().name

    @service(name="probe.loop")
    async def probe() -> int:
        seen["loop"] = asyncio.get_running_loop()
        seen["sync"] = await sync_to_async(where)()
        return await ClientApp.objects.acount()

    async def serve() -> list[Any]:
        seen["server"] = asyncio.get_running_loop()
        headers, messages, path = _call(key, "/services/probe.loop")
        return await _serve(headers, messages, path=path)

    try:
        answer = _answer(asyncio.run(serve()))
    finally:
        registry.remove("probe.loop")
    assert answer == ClientApp.objects.count() == 1
    assert seen["loop"] is seen["server"]
    assert seen["sync"].startswith("servicewire-asgi")
    assert AuditEntry.objects.filter(service="probe.loop", status=200).count() == 1


@pytest.mark.django_db(transaction=True)
def test_async_calls_in_progress_together_share_the_loop(key: str) -> None:
    # Two async calls served at once each wait for the other: neither holds
    # the loop (nor the other's thread) while it waits.
    from servicewire import service
    from servicewire.registry import registry

    arrived: list[str] = []
    both = asyncio.Event()

    @service(name="probe.meet")
    async def meet(who: str) -> list[str]:
        arrived.append(who)
        if len(arrived) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 20)
        return sorted(arrived)

    async def serve() -> list[list[Any]]:
        calls = [_call(key, "/services/probe.meet", {"who": who}) for who in ("a", "b")]
        return await asyncio.gather(*(_serve(h, m, path=p) for h, m, p in calls))

    try:
        answers = [_answer(sent) for sent in asyncio.run(serve())]
    finally:
        registry.remove("probe.meet")
    assert answers == [["a", "b"], ["a", "b"]]


@pytest.mark.django_db(transaction=True)
def test_an_async_services_error_is_its_callers_error(key: str) -> None:
    from servicewire import ServiceError, service
    from servicewire.registry import registry

    @service(name="probe.fails")
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ServiceError("no such sample")

    try:
        headers, messages, path = _call(key, "/services/probe.fails")
        sent = asyncio.run(_serve(headers, messages, path=path))
    finally:
        registry.remove("probe.fails")
    assert sent[0]["status"] == 400
    body = b"".join(bytes(m.get("body", b"")) for m in sent[1:])
    error = codecs.MSGPACK.decode(body, codecs.DEFAULT_LIMITS)["error"]
    assert (error["type"], error["message"]) == ("ServiceError", "no such sample")


@pytest.mark.django_db(transaction=True)
def test_requests_served_one_after_another_share_their_threads_cache(key: str) -> None:
    # As under a threaded WSGI server, the requests a thread serves use its
    # cache objects, and so its cache connections (a Redis cache would
    # otherwise open a connection per call).
    from django.core.cache import caches

    from servicewire import service
    from servicewire.asgi import get_asgi_application
    from servicewire.registry import registry

    @service(name="probe.cache")
    def cache_used() -> list[Any]:
        return [id(caches["default"]), threading.current_thread().name]

    async def serve() -> list[Any]:
        application = get_asgi_application()
        answers = []
        for _ in range(3):
            headers, messages, path = _call(key, "/services/probe.cache")
            answers.append(
                _answer(await _serve(headers, messages, path=path, application=application))
            )
        return answers

    try:
        answers = asyncio.run(serve())
    finally:
        registry.remove("probe.cache")
    assert answers[0][1].startswith("servicewire-asgi")
    assert answers == [answers[0]] * 3
