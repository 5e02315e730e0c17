"""Pickle done safely: attacked over HTTP against a live server.

Every gadget here would create a marker file (or import something) if it were
unpickled with ``pickle.loads``; each test checks the status, that the refusal
names what was refused, that the marker is absent, that the audit trail has
the refusal, and that the server still answers the next call.
"""

from __future__ import annotations

import copyreg
import pickle
import re
import shlex
import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from django.core import checks
from django.core.management import call_command
from django.test import override_settings

from servicewire import Client
from servicewire.errors import BadRequest, TransportError
from servicewire.models import AuditEntry, ClientApp
from servicewire.pickling import MAX_BUFFERS, PICKLE
from tests.test_live import ARRAYS, VALUES, same

pytestmark = pytest.mark.django_db(transaction=True)

PICKLE_TYPE = "application/x-python-pickle"
SITE_ALLOWS = {"REQUIRE_HTTPS": False, "ALLOW_PICKLE": True}


class Point:
    """A class of the tests: on no allow-list unless a test puts it there."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


# -- pickles written opcode by opcode, so that writing them runs nothing -----------------


def s(text: str) -> bytes:
    """A str (BINUNICODE)."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def stack_global(module: str, name: str) -> bytes:
    return s(module) + s(name) + pickle.STACK_GLOBAL


def call(callee: bytes, *args: bytes) -> bytes:
    """``callee(*args)``: REDUCE with the arguments as a tuple."""
    return callee + pickle.MARK + b"".join(args) + pickle.TUPLE + pickle.REDUCE


def str_list(*items: str) -> bytes:
    return pickle.EMPTY_LIST + pickle.MARK + b"".join(s(i) for i in items) + pickle.APPENDS


def arguments(**values: bytes) -> bytes:
    """A whole body: protocol 4, a dict of argument name to the pickled value."""
    items = b"".join(s(name) + value for name, value in values.items())
    return b"\x80\x04" + pickle.EMPTY_DICT + pickle.MARK + items + pickle.SETITEMS + pickle.STOP


def touch(path: Path) -> str:
    return f"touch {shlex.quote(str(path))}"


def create(path: Path) -> str:
    return f"open({str(path)!r}, 'w').close()"


def dtype_state(itemsize: int = -1, flags: int = 0) -> bytes:
    fields = (
        b"K\x03"
        + s("|")
        + b"NNN"
        + b"J"
        + struct.pack("<i", itemsize)
        + b"J"
        + struct.pack("<i", -1)
        + b"J"
        + struct.pack("<i", flags)
    )
    return pickle.MARK + fields + pickle.TUPLE


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def url(live_server: Any) -> str:
    return f"{live_server.url}/services/"


@pytest.fixture
def site_allows(settings: Any) -> None:
    settings.SERVICEWIRE = SITE_ALLOWS


@pytest.fixture
def pickle_key(make_key: Callable[..., str]) -> str:
    key = make_key("pickler")
    ClientApp.objects.filter(name="pickler").update(allow_pickle=True)
    return key


@pytest.fixture
def plain_key(make_key: Callable[..., str]) -> str:
    return make_key("plain")


@pytest.fixture
def sw(url: str, pickle_key: str, site_allows: None) -> Iterator[Client]:
    with Client(url, pickle_key, codec="pickle") as client:
        yield client


def post(
    url: str,
    key: str | None,
    body: bytes,
    *,
    service: str = "echo",
    content_type: str = PICKLE_TYPE,
    accept: str | None = None,
) -> httpx.Response:
    request_id = uuid.uuid4().hex
    headers = {"Content-Type": content_type, "X-Request-ID": request_id}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if accept is not None:
        headers["Accept"] = accept
    return httpx.post(url + service, content=body, headers=headers, timeout=10)


def audit_row(response: httpx.Response) -> AuditEntry:
    return AuditEntry.objects.get(request_id=response.headers["X-Request-ID"])


def assert_refused(
    response: httpx.Response, status: int, error_type: str, *, client: str = "pickler"
) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    # In pickle when the caller may use it (and asked in it), else in JSON.
    if response.headers["Content-Type"] == PICKLE_TYPE:
        assert client == "pickler"
        error: dict[str, Any] = PICKLE.decode(response.content)["error"]
    else:
        assert response.headers["Content-Type"] == "application/json"
        error = response.json()["error"]
    assert error["type"] == error_type
    row = audit_row(response)
    assert (row.status, row.error_type, row.client_name) == (status, error_type, client)
    assert row.service == "echo"
    return error


def assert_unharmed(url: str, key: str) -> None:
    response = post(url, key, pickle.dumps({"value": [1, "two"]}))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == PICKLE_TYPE
    assert PICKLE.decode(response.content) == [1, "two"]


# -- gadgets from an allowed client: 400 naming the global, nothing run ------------------


def _gadgets(tmp: Path) -> list[tuple[str, bytes, str]]:
    marker = tmp / "marker"
    import_then_getattr = call(
        call(
            stack_global("builtins", "getattr"),
            call(stack_global("builtins", "__import__"), s("os")),
            s("system"),
        ),
        s(touch(marker)),
    )
    return [
        ("os.system", call(stack_global("os", "system"), s(touch(marker))), "os.system"),
        (
            "os.system-GLOBAL-opcode",
            b"cos\nsystem\n" + pickle.MARK + s(touch(marker)) + pickle.TUPLE + pickle.REDUCE,
            "os.system",
        ),
        ("posix.system", call(stack_global("posix", "system"), s(touch(marker))), "posix.system"),
        ("nt.system", call(stack_global("nt", "system"), s(touch(marker))), "nt.system"),
        (
            "subprocess.Popen",
            call(stack_global("subprocess", "Popen"), str_list("touch", str(marker))),
            "subprocess.Popen",
        ),
        (
            "subprocess.check_output",
            call(stack_global("subprocess", "check_output"), str_list("touch", str(marker))),
            "subprocess.check_output",
        ),
        ("eval", call(stack_global("builtins", "eval"), s(create(marker))), "builtins.eval"),
        ("exec", call(stack_global("builtins", "exec"), s(create(marker))), "builtins.exec"),
        ("getattr", import_then_getattr, "builtins.getattr"),
        (
            "__import__",
            call(stack_global("builtins", "__import__"), s("os")),
            "builtins.__import__",
        ),
        ("dotted-os.path", call(stack_global("os", "path.join"), s("a")), "os.path.join"),
        (
            "dotted-sys.modules",
            call(stack_global("sys", "modules.os.system"), s(touch(marker))),
            "sys.modules.os.system",
        ),
        (
            "dotted-past-an-allowed-class",
            call(stack_global("collections", "OrderedDict.__init__.__globals__"), s("x")),
            "collections.OrderedDict.__init__.__globals__",
        ),
        (
            "dotted-builtins-dict",
            call(stack_global("builtins", "dict.__class__"), s("x")),
            "builtins.dict.__class__",
        ),
        (
            "copyreg._reconstructor",
            call(
                stack_global("copyreg", "_reconstructor"),
                stack_global("tests.test_pickle", "Point"),
                stack_global("builtins", "object"),
                pickle.NONE,
            ),
            "copyreg._reconstructor",
        ),
        (
            "a-class-of-the-tests",
            call(stack_global("tests.test_pickle", "Point"), b"K\x01", b"K\x02"),
            "tests.test_pickle.Point",
        ),
    ]


GADGET_IDS = [name for name, _, _ in _gadgets(Path("/nonexistent"))]


@pytest.mark.parametrize("gadget", GADGET_IDS)
def test_a_gadget_from_an_allowed_client_is_refused_naming_the_global(
    url: str, pickle_key: str, site_allows: None, tmp_path: Path, gadget: str
) -> None:
    _, value, refused = next(g for g in _gadgets(tmp_path) if g[0] == gadget)
    response = post(url, pickle_key, arguments(value=value))
    error = assert_refused(response, 400, "BadRequest")
    assert error["message"] == f"pickle refers to {refused}, which is not allowed"
    assert error["details"] == {"global": refused}
    assert not (tmp_path / "marker").exists()
    assert_unharmed(url, pickle_key)


def test_a_real_pickled_gadget_object_is_refused(
    url: str, pickle_key: str, site_allows: None, tmp_path: Path
) -> None:
    from tests.testapp.services import _ShellGadget

    marker = tmp_path / "marker"
    body = pickle.dumps({"value": _ShellGadget(touch(marker))})
    error = assert_refused(post(url, pickle_key, body), 400, "BadRequest")
    assert "posix.system" in error["message"]
    assert not marker.exists()


@pytest.fixture
def extension_to_os_system() -> Iterator[int]:
    code = 0xF1
    copyreg.add_extension("os", "system", code)
    try:
        yield code
    finally:
        copyreg.remove_extension("os", "system", code)


@pytest.mark.parametrize(
    ("opcode", "code_bytes"),
    [("EXT1", lambda c: bytes([c])), ("EXT2", lambda c: struct.pack("<H", c))],
)
def test_extension_registry_opcodes_are_refused(
    url: str,
    pickle_key: str,
    site_allows: None,
    tmp_path: Path,
    extension_to_os_system: int,
    opcode: str,
    code_bytes: Callable[[int], bytes],
) -> None:
    marker = tmp_path / "marker"
    # CPython's own unpickler, having resolved a code once, serves it from a
    # process-wide cache without asking find_class: prime that cache first.
    primer = b"\x80\x02" + getattr(pickle, opcode) + code_bytes(extension_to_os_system) + b"."
    assert pickle.loads(primer) is __import__("os").system
    value = getattr(pickle, opcode) + code_bytes(extension_to_os_system)
    value += pickle.MARK + s(touch(marker)) + pickle.TUPLE + pickle.REDUCE
    error = assert_refused(post(url, pickle_key, arguments(value=value)), 400, "BadRequest")
    assert error["message"] == (
        f"pickle uses the copyreg extension registry ({opcode}), which is not allowed"
    )
    assert not marker.exists()
    assert_unharmed(url, pickle_key)


@pytest.mark.parametrize(
    ("value", "opcode"),
    [(b"Pos.system\n", "PERSID"), (s("os.system") + pickle.BINPERSID, "BINPERSID")],
    ids=["PERSID", "BINPERSID"],
)
def test_persistent_ids_are_refused(
    url: str, pickle_key: str, site_allows: None, value: bytes, opcode: str
) -> None:
    error = assert_refused(post(url, pickle_key, arguments(value=value)), 400, "BadRequest")
    assert error["message"] == f"pickle uses a persistent id ({opcode}), which is not allowed"
    assert_unharmed(url, pickle_key)


def test_an_object_array_is_refused_before_its_items_are_read(
    url: str, pickle_key: str, site_allows: None, tmp_path: Path
) -> None:
    from tests.testapp.services import _ShellGadget

    marker = tmp_path / "marker"
    array = np.array([1, _ShellGadget(touch(marker))], dtype=object)
    for protocol in (4, 5):
        body = pickle.dumps({"value": array}, protocol=protocol)
        error = assert_refused(post(url, pickle_key, body), 400, "BadRequest")
        assert "dtype object" in error["message"]
    assert not marker.exists()
    assert_unharmed(url, pickle_key)


def test_a_structured_dtype_holding_objects_is_refused(
    url: str, pickle_key: str, site_allows: None
) -> None:
    array = np.zeros(2, dtype=[("a", "f8"), ("b", "O")])
    error = assert_refused(post(url, pickle_key, pickle.dumps({"value": array})), 400, "BadRequest")
    assert "not allowed" in error["message"]


def _void_array(state: bytes, then: bytes = b"") -> bytes:
    """``_frombuffer(bytearray(8), dtype('V8') built with state, (1,), 'C')``, the
    dtype kept in memo slot 1, and ``then`` as a second argument."""
    dtype = call(stack_global("numpy", "dtype"), s("V8"), pickle.NEWFALSE, pickle.NEWTRUE)
    array = call(
        stack_global("numpy._core.numeric", "_frombuffer"),
        pickle.BYTEARRAY8 + struct.pack("<Q", 8) + b"abcdefgh",
        dtype + pickle.BINPUT + b"\x01" + state + pickle.BUILD,
        b"K\x01" + pickle.TUPLE1,
        s("C"),
    )
    values = {"value": array, **({"other": then} if then else {})}
    return arguments(**values)


def test_dtype_state_cannot_smuggle_the_object_flag(sw: Client, url: str, pickle_key: str) -> None:
    # numpy's own dtype.__setstate__ would give this void dtype the object
    # flag (flags=63); servicewire builds the dtype from public constructors.
    response = post(url, pickle_key, _void_array(dtype_state(flags=63)), service="echo")
    assert response.status_code == 200
    back = PICKLE.decode(response.content)
    assert back.dtype == np.dtype("V8") and not back.dtype.hasobject
    assert bytes(back[0]) == b"abcdefgh"


def test_a_dtype_cannot_be_rebuilt_after_an_array_uses_it(
    url: str, pickle_key: str, site_allows: None
) -> None:
    # numpy's own __setstate__ would grow the item size under the array: an
    # out-of-bounds read of the server's memory.
    grow = pickle.BINGET + b"\x01" + dtype_state(itemsize=100_000) + pickle.BUILD
    response = post(url, pickle_key, _void_array(dtype_state(), then=grow))
    error = assert_refused(response, 400, "BadRequest")
    assert error["message"].startswith("pickle rebuilds a ")
    assert_unharmed(url, pickle_key)


def test_numpy_ndarray_itself_is_not_callable(url: str, pickle_key: str, site_allows: None) -> None:
    # ndarray((10**6,)) would hand back uninitialised server memory.
    value = call(stack_global("numpy", "ndarray"), b"J" + struct.pack("<i", 10**6) + b"\x85")
    error = assert_refused(post(url, pickle_key, arguments(value=value)), 400, "BadRequest")
    assert "numpy.ndarray" in error["message"]


def test_bytearray_from_a_size_is_refused(url: str, pickle_key: str, site_allows: None) -> None:
    value = call(stack_global("builtins", "bytearray"), b"J" + struct.pack("<i", 2**31 - 1))
    error = assert_refused(post(url, pickle_key, arguments(value=value)), 400, "BadRequest")
    assert "bytearray" in error["message"]


REGISTRY: list[Any] = []
SETTINGS: dict[str, Any] = {}


@pytest.mark.parametrize(
    ("value", "changed"),
    [
        (
            stack_global("collections", "OrderedDict")
            + pickle.MARK
            + pickle.NONE
            + pickle.EMPTY_DICT
            + s("planted")
            + stack_global("builtins", "dict")
            + pickle.SETITEM
            + pickle.TUPLE
            + pickle.BUILD,
            "collections.OrderedDict",
        ),
        (
            stack_global("tests.test_pickle", "REGISTRY")
            + pickle.MARK
            + s("planted")
            + pickle.APPENDS,
            "tests.test_pickle.REGISTRY",
        ),
        (
            stack_global("tests.test_pickle", "REGISTRY") + s("planted") + pickle.APPEND,
            "tests.test_pickle.REGISTRY",
        ),
        (
            stack_global("tests.test_pickle", "SETTINGS") + s("DEBUG") + pickle.NEWTRUE + b"s",
            "tests.test_pickle.SETTINGS",
        ),
    ],
    ids=["BUILD-a-class", "APPENDS-a-global", "APPEND-a-global", "SETITEM-a-global"],
)
def test_a_pickle_cannot_change_a_global_for_later_requests(
    url: str, pickle_key: str, settings: Any, value: bytes, changed: str
) -> None:
    listed = ["tests.test_pickle.REGISTRY", "tests.test_pickle.SETTINGS"]
    settings.SERVICEWIRE = {**SITE_ALLOWS, "PICKLE_ALLOW": listed}
    error = assert_refused(post(url, pickle_key, arguments(value=value)), 400, "BadRequest")
    assert error["message"] == f"pickle changes {changed} itself, which is not allowed"
    assert REGISTRY == [] and SETTINGS == {}
    assert not hasattr(__import__("collections").OrderedDict, "planted")
    assert_unharmed(url, pickle_key)


def test_built_in_values_cannot_be_rebuilt(url: str, pickle_key: str, site_allows: None) -> None:
    when = call(stack_global("datetime", "date"), b"M\xe8\x07", b"K\x01", b"K\x02")
    value = when + pickle.EMPTY_DICT + s("year") + b"K\x01" + pickle.SETITEM + pickle.BUILD
    error = assert_refused(post(url, pickle_key, arguments(value=value)), 400, "BadRequest")
    assert error["message"] == "pickle rebuilds a date, which is not allowed"


# -- framing -----------------------------------------------------------------------------


def test_framing_whose_lengths_do_not_add_up_is_refused(
    url: str, pickle_key: str, site_allows: None
) -> None:
    body = PICKLE.encode({"value": np.arange(100.0)})
    for broken in (body[:-1], body + b"\0", body[:20]):
        error = assert_refused(post(url, pickle_key, broken), 400, "BadRequest")
        assert "pickle body" in error["message"]
    too_many = b"SWP5" + struct.pack("<IQ", MAX_BUFFERS + 1, 0)
    error = assert_refused(post(url, pickle_key, too_many), 400, "BadRequest")
    assert f"limit of {MAX_BUFFERS}" in error["message"]
    assert_unharmed(url, pickle_key)


def test_a_body_over_the_size_limit_is_refused_unread(
    url: str, pickle_key: str, settings: Any
) -> None:
    settings.SERVICEWIRE = {**SITE_ALLOWS, "MAX_BODY_BYTES": 1000}
    body = PICKLE.encode({"value": np.zeros(1000)})
    assert_refused(post(url, pickle_key, body), 413, "PayloadTooLarge")


# -- who may use pickle at all -----------------------------------------------------------


def test_a_client_not_flagged_gets_415_and_its_body_is_never_unpickled(
    url: str, plain_key: str, site_allows: None, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    gadget = arguments(value=call(stack_global("os", "system"), s(touch(marker))))
    error = assert_refused(
        post(url, plain_key, gadget), 415, "UnsupportedMediaType", client="plain"
    )
    assert PICKLE_TYPE not in error["message"].split("send one of:")[1]
    assert not marker.exists()


def test_a_flagged_client_gets_415_while_the_site_has_pickle_off(
    url: str, pickle_key: str, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    gadget = arguments(value=call(stack_global("os", "system"), s(touch(marker))))
    assert_refused(post(url, pickle_key, gadget), 415, "UnsupportedMediaType")
    assert not marker.exists()


def test_an_unauthenticated_pickle_gets_401(url: str, site_allows: None, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    gadget = arguments(value=call(stack_global("os", "system"), s(touch(marker))))
    response = post(url, None, gadget)
    assert response.status_code == 401
    assert audit_row(response).error_type == "Unauthorized"
    assert not marker.exists()


def test_an_unauthenticated_pickle_gets_404_in_hide_mode(
    url: str, settings: Any, tmp_path: Path
) -> None:
    settings.SERVICEWIRE = {**SITE_ALLOWS, "HIDE_FROM_UNAUTHENTICATED": True}
    marker = tmp_path / "marker"
    gadget = arguments(value=call(stack_global("os", "system"), s(touch(marker))))
    assert post(url, "sw_" + "A" * 12 + "_" + "B" * 43, gadget).status_code == 404
    assert not marker.exists()


@pytest.mark.parametrize("flagged", [False, True], ids=["not-flagged", "flagged-site-off"])
def test_accept_pickle_from_a_caller_not_allowed_never_gets_pickle(
    url: str, pickle_key: str, plain_key: str, settings: Any, flagged: bool
) -> None:
    if not flagged:
        settings.SERVICEWIRE = SITE_ALLOWS
    key = pickle_key if flagged else plain_key
    body = b'{"value": 1}'
    only = post(url, key, body, content_type="application/json", accept=PICKLE_TYPE)
    assert only.status_code == 406
    assert only.headers["Content-Type"] == "application/json"
    preferred = post(
        url, key, body, content_type="application/json", accept=f"{PICKLE_TYPE}, */*;q=0.1"
    )
    assert preferred.status_code == 200
    assert preferred.headers["Content-Type"] == "application/json"


def test_an_allowed_client_may_ask_for_pickle_answers(
    url: str, pickle_key: str, site_allows: None
) -> None:
    response = post(
        url, pickle_key, b'{"value": [1, 2]}', content_type="application/json", accept=PICKLE_TYPE
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == PICKLE_TYPE
    assert PICKLE.decode(response.content) == [1, 2]


# -- what an allowed client gets ---------------------------------------------------------


@pytest.mark.parametrize("value", [v for _, v in VALUES], ids=[i for i, _ in VALUES])
def test_every_value_round_trips_exactly_in_pickle(sw: Client, value: Any) -> None:
    back = sw.echo(value=value)
    assert same(value, back), (value, back)


@pytest.mark.parametrize("array", [a for _, a in ARRAYS], ids=[i for i, _ in ARRAYS])
def test_arrays_round_trip_exactly_without_copies(sw: Client, array: Any) -> None:
    back = sw.echo(value=array)
    assert isinstance(back, np.ndarray)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        assert back.flags.f_contiguous
    assert back.flags.writeable or back.size == 0
    if array.size:
        # A view into the response body, not a copy of it.
        assert not back.flags.owndata


def test_arrays_reach_the_service_as_aligned_writable_views(sw: Client) -> None:
    flags = sw.pickled.array_flags(value=np.arange(1000, dtype=np.float64))
    assert flags == {"owndata": False, "writeable": True, "aligned": True}


def test_a_pickled_array_goes_out_from_its_own_memory() -> None:
    from servicewire.pickling import PICKLE

    array = np.arange(2_000_000, dtype=np.float64)
    segments = PICKLE.encode_segments({"samples": array})
    # The elements are sent from the array itself, not from a framed copy.
    assert any(np.shares_memory(np.frombuffer(part, np.uint8), array) for part in segments)
    assert PICKLE.encode({"samples": array}) == b"".join(segments)
    np.testing.assert_array_equal(PICKLE.decode(bytearray(b"".join(segments)))["samples"], array)


def test_a_pickle_from_plain_pickle_dumps_is_accepted(
    url: str, pickle_key: str, site_allows: None
) -> None:
    value = {"when": VALUES[19][1], "samples": np.arange(6).reshape(2, 3), "tags": {"a"}}
    for protocol in (3, 4, 5):
        response = post(url, pickle_key, pickle.dumps({"value": value}, protocol=protocol))
        assert response.status_code == 200
        back = PICKLE.decode(response.content)
        assert back["tags"] == {"a"} and back["when"] == value["when"]
        np.testing.assert_array_equal(back["samples"], value["samples"])


def test_site_listed_classes_round_trip(
    url: str, pickle_key: str, settings: Any, tmp_path: Path
) -> None:
    with Client(url, pickle_key, codec="pickle") as sw:
        settings.SERVICEWIRE = SITE_ALLOWS
        with pytest.raises(BadRequest, match=re.escape("tests.test_pickle.Point, which is not")):
            sw.echo(value=Point(1, 2))
        settings.SERVICEWIRE = {**SITE_ALLOWS, "PICKLE_ALLOW": ["tests.test_pickle.Point"]}
        # The server unpickles it now; this client has not listed it, so it
        # refuses the answer.
        with pytest.raises(TransportError, match=re.escape("tests.test_pickle.Point, which")):
            sw.echo(value=Point(1, 2))
    with Client(url, pickle_key, codec="pickle", pickle_allow=["tests.test_pickle.Point"]) as sw:
        assert sw.echo(value=Point(1, 2)) == Point(1, 2)


def test_the_client_refuses_a_gadget_from_the_server(
    sw: Client, tmp_path: Path, url: str, key: str
) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(TransportError, match=re.escape("posix.system, which is not allowed")):
        sw.pickled.gadget(path=str(marker))
    assert not marker.exists()
    # A client that did not ask for pickle gets the body as bytes, unread.
    with Client(url, key) as plain:
        assert isinstance(plain.pickled.gadget(path=str(marker)), bytes)
    assert not marker.exists()


def test_a_pickle_client_reads_json_errors(sw: Client) -> None:
    from servicewire.errors import ValidationError

    with pytest.raises(ValidationError):
        sw.add(a=1)


# -- configuration -----------------------------------------------------------------------


def test_system_check_warns_whenever_pickle_is_on() -> None:
    def ids() -> set[str]:
        return {message.id or "" for message in checks.run_checks()}

    assert "servicewire.W003" not in ids()
    with override_settings(SERVICEWIRE={**SITE_ALLOWS, "PICKLE_ALLOW": ["myapp.Point"]}):
        warnings = [m for m in checks.run_checks() if m.id == "servicewire.W003"]
        assert len(warnings) == 1
        assert "myapp.Point" in warnings[0].msg and warnings[0].hint


@pytest.mark.parametrize(
    "entry", ["os.system", "builtins.eval", "subprocess.Popen", "Point", "a.b c"]
)
def test_dangerous_or_malformed_pickle_allow_entries_are_errors(entry: str) -> None:
    with override_settings(SERVICEWIRE={**SITE_ALLOWS, "PICKLE_ALLOW": [entry]}):
        errors = [m for m in checks.run_checks() if m.id == "servicewire.E001"]
    assert len(errors) == 1 and "PICKLE_ALLOW" in errors[0].msg


def test_client_add_allow_pickle_flags_the_client(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("servicewire", "client", "add", "trusted", "--allow-pickle")
    call_command("servicewire", "client", "add", "ordinary")
    assert ClientApp.objects.get(name="trusted").allow_pickle
    assert not ClientApp.objects.get(name="ordinary").allow_pickle
    assert "ALLOW_PICKLE is off" in capsys.readouterr().out
