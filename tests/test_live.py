"""End to end: the real client against a real server on 127.0.0.1.

pytest-django's ``live_server`` runs the test site in Django's threaded test
server; every call here crosses a real socket.
"""

from __future__ import annotations

import datetime
import decimal
import http.client
import json
import math
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from servicewire import AsyncClient, Client, ServiceError
from servicewire.errors import (
    Forbidden,
    NotFound,
    TransportError,
    Unauthorized,
    ValidationError,
)

pytestmark = pytest.mark.django_db(transaction=True)

UTC = datetime.UTC
PLUS_0530 = datetime.timezone(datetime.timedelta(hours=5, minutes=30))

# Every row of DESIGN.md's value table: (id, value).
VALUES: list[tuple[str, Any]] = [
    ("none", None),
    ("true", True),
    ("false", False),
    ("int", 42),
    ("negative-int", -7),
    ("int-2**64", 2**64),
    ("int-huge", -(2**1000) + 1),
    ("float", 3.25),
    ("float-inf", math.inf),
    ("float-neg-inf", -math.inf),
    ("str", "héllo wörld ✓"),
    ("bytes", b"\x00\x01\xffbinary"),
    ("list", [1, "two", 3.0, None]),
    ("tuple", (1, "two", (3, 4))),
    ("dict-str-keys", {"a": 1, "b": [2, 3]}),
    ("dict-any-keys", {1: "int", (1, 2): "tuple", frozenset({3}): "frozenset", b"k": "bytes"}),
    ("set", {1, 2, 3}),
    ("frozenset", frozenset({"a", "b"})),
    ("datetime-naive", datetime.datetime(2024, 2, 29, 23, 59, 59, 999999)),
    ("datetime-utc", datetime.datetime(2024, 1, 1, 12, 0, tzinfo=UTC)),
    ("datetime-offset", datetime.datetime(2024, 1, 1, 12, 0, 30, 5, tzinfo=PLUS_0530)),
    ("date", datetime.date(1999, 12, 31)),
    ("time", datetime.time(8, 30, 15, 250)),
    ("time-aware", datetime.time(8, 30, tzinfo=PLUS_0530)),
    ("timedelta", datetime.timedelta(days=-3, seconds=5, microseconds=7)),
    ("decimal", decimal.Decimal("12.3400")),
    ("decimal-exp", decimal.Decimal("-1E+30")),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("complex", complex(1.5, -2.0)),
    ("np-float32", np.float32(1.5)),
    ("np-int64", np.int64(-9)),
    ("np-bool", np.bool_(True)),
]

ARRAYS: list[tuple[str, Any]] = [
    ("float64-2d", np.arange(12, dtype=np.float64).reshape(3, 4)),
    ("fortran", np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))),
    ("bool", np.array([True, False, True])),
    ("complex128", np.array([1 + 2j, 3 - 4j])),
    ("uint8-3d", np.arange(24, dtype=np.uint8).reshape(2, 3, 4)),
    ("float16", np.array([0.5, 1.5], dtype=np.float16)),
    ("big-endian", np.array([1, 2, 3], dtype=">i4")),
    ("zero-d", np.array(5.0)),
    ("empty", np.zeros((0, 3))),
    ("strided-view", np.arange(20, dtype=np.float64)[::3]),
]


def same(a: Any, b: Any) -> bool:
    """Equal in value AND in type, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, datetime.datetime | datetime.time):
        return (
            a == b and a.utcoffset() == b.utcoffset() and (a.tzinfo is None) == (b.tzinfo is None)
        )
    if isinstance(a, decimal.Decimal):
        return a.as_tuple() == b.as_tuple()
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.fixture
def url(live_server: Any) -> str:
    return f"{live_server.url}/services/"


@pytest.fixture
def sw(url: str, key: str) -> Iterator[Client]:
    with Client(url, key) as client:
        yield client


@pytest.fixture
def sw_json(url: str, key: str) -> Iterator[Client]:
    with Client(url, key, codec="json") as client:
        yield client


@pytest.mark.parametrize(("value"), [v for _, v in VALUES], ids=[i for i, _ in VALUES])
def test_every_value_round_trips_exactly_in_msgpack(sw: Client, value: Any) -> None:
    back = sw.echo(value=value)
    assert same(value, back), (value, back)


def test_nan_round_trips_in_msgpack(sw: Client) -> None:
    back = sw.echo(value=[math.nan])
    assert math.isnan(back[0])


def test_nested_mixture_round_trips(sw: Client) -> None:
    value = {
        ("k", 1): {frozenset({decimal.Decimal("1.10")}), None},
        "when": [datetime.datetime(2020, 5, 17, tzinfo=PLUS_0530), datetime.date(2020, 5, 17)],
        2**70: (uuid.UUID(int=5), complex(0, 1), b"\x00"),
    }
    assert same(value, sw.echo(value=value))


@pytest.mark.parametrize(("array"), [a for _, a in ARRAYS], ids=[i for i, _ in ARRAYS])
def test_arrays_round_trip_exactly_in_msgpack(sw: Client, array: Any) -> None:
    back = sw.echo(value=array)
    assert isinstance(back, np.ndarray)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        assert back.flags.f_contiguous
    assert back.flags.writeable or back.size == 0


@pytest.mark.parametrize(("value"), [v for _, v in VALUES], ids=[i for i, _ in VALUES])
def test_every_value_has_a_natural_json_form(sw_json: Client, value: Any) -> None:
    if isinstance(value, dict) and any(isinstance(k, tuple | frozenset) for k in value):
        # JSON objects have string keys: the client says so before sending.
        with pytest.raises(TypeError, match="cannot encode as JSON"):
            sw_json.echo(value=value)
        return
    back = sw_json.echo(value=value)
    # Natural JSON: only JSON's own types come back.
    assert isinstance(back, type(None) | bool | int | float | str | list | dict)


@pytest.mark.parametrize(
    ("value", "natural"),
    [
        ((1, 2), [1, 2]),
        (decimal.Decimal("1.50"), "1.50"),
        (datetime.datetime(2024, 1, 1, 12, 0, tzinfo=PLUS_0530), "2024-01-01T12:00:00+05:30"),
        (datetime.date(2024, 1, 1), "2024-01-01"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (complex(1, 2), [1.0, 2.0]),
        (np.arange(4).reshape(2, 2), [[0, 1], [2, 3]]),
        (np.float32(0.5), 0.5),
        (2**70, 2**70),
    ],
    ids=[
        "tuple",
        "decimal",
        "datetime",
        "date",
        "uuid",
        "complex",
        "ndarray",
        "np-scalar",
        "bigint",
    ],
)
def test_json_forms_of_rich_values(sw_json: Client, value: Any, natural: Any) -> None:
    assert sw_json.echo(value=value) == natural


def test_typed_parameters_decode_iso_strings_from_json(sw_json: Client) -> None:
    out = sw_json.types.typed(
        when="2024-05-01T12:30:00+02:00",
        day="2024-05-01",
        amount="12.50",
        ident="12345678-1234-5678-1234-567812345678",
        pair=[1, "x"],
        tags=["a"],
    )
    assert out["types"] == ["datetime", "date", "Decimal", "UUID", "tuple", "set", "timedelta"]


def test_typed_parameters_take_rich_values_from_msgpack(sw: Client) -> None:
    when = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=PLUS_0530)
    out = sw.types.typed(
        when=when,
        day=datetime.date(2024, 5, 1),
        amount=decimal.Decimal("12.50"),
        ident=uuid.UUID(int=7),
        pair=(1, "x"),
        tags={"a"},
    )
    assert same(out["when"], when) and out["pair"] == (1, "x") and out["tags"] == {"a"}


def test_array_service_with_attribute_sugar(url: str, make_key: Callable[..., str]) -> None:
    with Client(url, make_key("sci", scopes=["science"])) as sw:
        samples = np.linspace(0, 1, 1001)
        out = sw.science.spectrum(samples=samples)
        assert out["total"] == pytest.approx(samples.sum())
        np.testing.assert_array_equal(out["scaled"], samples * 2)
        doubled = sw.science.double(samples=samples.astype(np.float32))
        assert doubled.dtype == np.float32


def test_errors_are_raised_as_their_classes(sw: Client, url: str) -> None:
    with pytest.raises(ValidationError) as invalid:
        sw.add(a=1)
    assert invalid.value.details == {"b": "missing required argument"}
    assert invalid.value.status == 422
    with pytest.raises(NotFound):
        sw.call("no.such.thing")
    with pytest.raises(Forbidden):
        sw.science.spectrum(samples=np.zeros(2))
    with pytest.raises(ServiceError) as overdrawn:
        sw.withdraw(account="acc", amount=decimal.Decimal("9.99"))
    error = overdrawn.value
    assert (error.type, error.status, error.message) == ("Overdrawn", 409, "balance too low")
    assert error.details == {"missing": decimal.Decimal("9.99"), "account": "acc"}
    with Client(url, "sw_" + "A" * 12 + "_" + "B" * 43) as bad, pytest.raises(Unauthorized):
        bad.add(a=1, b=2)


def test_services_lists_what_the_key_may_call(sw: Client) -> None:
    names = {s["name"] for s in sw.services()}
    assert {"add", "echo", "types.typed"} <= names
    assert "science.spectrum" not in names


def test_async_client_has_the_same_api(url: str, key: str) -> None:
    import asyncio

    async def main() -> tuple[Any, Any]:
        async with AsyncClient(url, key) as sw:
            return await sw.add(a=20, b=22), await sw.call("slow_add", a=1, b=1)

    assert asyncio.run(main()) == (42, 2)


def test_connection_refused_is_a_transport_error(key: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        Client(f"http://127.0.0.1:{port}/services/", key, timeout=5) as sw,
        pytest.raises(TransportError) as caught,
    ):
        sw.add(a=1, b=2)
    assert key not in str(caught.value) and key not in repr(caught.value)


def test_curl_style_raw_json_call(live_server: Any, key: str) -> None:
    """What curl or JavaScript would send: plain HTTP/1.1 and JSON, no servicewire."""
    parts = urlsplit(live_server.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request(
            "POST",
            "/services/add",
            body=b'{"a": 19, "b": 23}',
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/json"
        assert response.getheader("X-Request-ID")
        assert json.loads(response.read()) == 42

        connection.request(
            "POST",
            "/services/add",
            body=b'{"a": "x"}',
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 422
        body = json.loads(response.read())
        assert body["error"]["type"] == "ValidationError"
        assert set(body["error"]["details"]) == {"a", "b"}
    finally:
        connection.close()


def test_cli_calls_the_live_server(
    url: str, key: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from servicewire.cli import main

    monkeypatch.setenv("SERVICEWIRE_URL", url)
    monkeypatch.setenv("SERVICEWIRE_KEY", key)
    assert main(["call", "add", "a=1", "b=2"]) == 0
    assert capsys.readouterr().out.strip() == "3"
    assert main(["call", "withdraw", "account=acc", "amount=1.5"]) == 1
    err = capsys.readouterr().err
    assert "Overdrawn (409): balance too low" in err and key not in err
    assert main(["services"]) == 0
    out = capsys.readouterr().out
    assert "add" in out and "Add two integers." in out
