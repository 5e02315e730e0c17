"""The ``servicewire`` command, run in-process against the fake wire server."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from servicewire import cli
from tests.wire_fake import FakeServer, refused_url, serve


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    with serve() as server:
        yield server


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVICEWIRE_URL", raising=False)
    monkeypatch.delenv("SERVICEWIRE_KEY", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1", ("a", 1)),
        ("x=1.5", ("x", 1.5)),
        ("name=bob", ("name", "bob")),
        ("xs=[1,2]", ("xs", [1, 2])),
        ('s="1"', ("s", "1")),
        ('m={"k": null}', ("m", {"k": None})),
        ("flag=true", ("flag", True)),
        ("empty=", ("empty", "")),
        ("eq=a=b", ("eq", "a=b")),
        ("text=hello world", ("text", "hello world")),
    ],
)
def test_argument_values_parse_as_json_else_string(text: str, expected: tuple[str, Any]) -> None:
    assert cli.parse_argument(text) == expected


@pytest.mark.parametrize("text", ["a", "=1", "1a=2", "a-b=3"])
def test_malformed_arguments_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_argument(text)


def test_call_prints_the_result(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--url", fake.url, "call", "add", "a=1", "b=2")
    assert (code, out, err) == (0, "3\n", "")


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_call_sends_parsed_values(
    fake: FakeServer, capsys: pytest.CaptureFixture[str], codec: str
) -> None:
    argv = ["--url", fake.url, "--codec", codec, "call", "echo", "n=1", "name=bob", "xs=[1,2]"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert out == "{'n': 1, 'name': 'bob', 'xs': [1, 2]}\n"
    assert fake.last.headers["content-type"] == f"application/{codec}"


def test_call_json_output(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--url", fake.url, "call", "echo", "a=1", "s=x", "--json")
    assert code == 0
    assert json.loads(out) == {"a": 1, "s": "x"}
    assert out.startswith("{\n  ")


def test_strings_print_bare(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--url", fake.url, "call", "slow", "seconds=0")
    assert (code, out) == (0, "late\n")


def test_arrays_print_a_summary_and_numpy_repr() -> None:
    text = cli.format_value(np.arange(3, dtype=np.int32))
    assert text == "ndarray dtype=int32 shape=(3,)\narray([0, 1, 2], dtype=int32)"


def test_url_and_key_come_from_the_environment(
    fake: FakeServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICEWIRE_URL", fake.url)
    monkeypatch.setenv("SERVICEWIRE_KEY", "sw_env_key")
    code, out, _ = run(capsys, "call", "add", "a=2", "b=2")
    assert (code, out) == (0, "4\n")
    assert fake.last.headers["authorization"] == "Bearer sw_env_key"


def test_key_option_is_sent(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "--url", fake.url, "--key", "sw_opt_key", "call", "add", "a=1", "b=1")
    assert fake.last.headers["authorization"] == "Bearer sw_opt_key"


def test_a_service_error_prints_type_status_message_and_details(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--url", fake.url, "call", "error", "type=Overdrawn", "status=409"]
    code, out, err = run(capsys, *argv, "message=balance too low", 'details={"missing": 5}')
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "error: Overdrawn (409): balance too low"
    assert lines[1] == "details: {'missing': 5}"
    assert lines[2] == "request id: " + fake.last.headers["x-request-id"]


def test_a_validation_error_exits_1(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--url", fake.url, "call", "error", "type=ValidationError", "status=422"]
    code, _, err = run(capsys, *argv, "message=bad")
    assert code == 1
    assert err.startswith("error: ValidationError (422): bad\n")
    assert "details" not in err


def test_an_unreachable_server_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with refused_url() as url:
        code, _, err = run(capsys, "--url", url, "call", "add", "a=1")
    assert code == 1
    assert err.startswith("error: TransportError (0): ")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["call"],
        ["call", "add", "a"],
        ["call", "add", "a=1", "a=2"],
        ["call", "../x"],
        ["--codec", "pickle", "call", "add"],
        ["frobnicate"],
    ],
)
def test_bad_usage_exits_2(
    fake: FakeServer, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, "--url", fake.url, *argv)
    assert code == 2
    assert out == ""
    assert err


def test_a_missing_url_exits_2_naming_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "call", "add", "a=1")
    assert code == 2
    assert "SERVICEWIRE_URL" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "SERVICEWIRE_KEY" in out


def test_services_prints_an_aligned_table(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--url", fake.url, "services")
    assert code == 0
    assert out.splitlines() == [
        "NAME              PARAMETERS                                                          "
        "RETURNS        DOC",
        "add               a: integer, b: integer                                              "
        "integer        Add two integers.",
        "science.spectrum  samples: array[number], window: integer = 256                       "
        "object         Power spectrum of a signal.",
        "when              at: date-time, pair: [integer, any], tags: set[string], kind: Kind  "
        "string | null",
    ]


def test_services_table_when_empty() -> None:
    assert cli.services_table([]) == "(no services)"


def test_demo_runs_the_bundled_site(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    module = types.ModuleType("servicewire.demo.run")

    def fake_main() -> int:
        calls.append("ran")
        return 0

    module.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "servicewire.demo.run", module)
    code, _, _ = run(capsys, "demo")
    assert (code, calls) == (0, ["ran"])


def test_demo_without_django_says_how_to_install_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import raise ImportError, as a missing Django would.
    monkeypatch.setitem(sys.modules, "servicewire.demo.run", None)
    code, _, err = run(capsys, "demo")
    assert code == 1
    assert "pip install 'servicewire[django,numpy]'" in err


def test_python_dash_m_runs_the_cli(fake: FakeServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "servicewire", "--url", fake.url, "call", "add", "a=5", "b=6"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "11\n"), done.stderr
