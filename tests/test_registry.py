"""@service: names, duplicates, signatures compiled at registration."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from servicewire import ServiceError, service
from servicewire.errors import ValidationError
from servicewire.registry import RegistryError, registry


@pytest.fixture
def scratch() -> Iterator[list[str]]:
    """Names registered by a test, removed again afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        registry.remove(name)


@pytest.mark.parametrize(
    "name",
    [
        "_private",
        "Upper",
        "has-dash",
        "has space",
        "trailing.",
        ".leading",
        "a..b",
        "1abc",
        "openapi.json",
        "",
        "a/b",
    ],
)
def test_bad_names_are_refused_at_registration(name: str) -> None:
    with pytest.raises(RegistryError, match="invalid service name"):
        service(name=name)(lambda: None)


def test_dotted_lower_case_names_are_accepted(scratch: list[str]) -> None:
    scratch.append("billing.invoice_total2")
    svc = service(name="billing.invoice_total2")(lambda: 1)
    assert registry.get("billing.invoice_total2") is svc


def test_duplicate_name_is_a_clear_error(scratch: list[str]) -> None:
    scratch.append("dup.name")

    @service(name="dup.name")
    def first() -> int:
        return 1

    with pytest.raises(RegistryError, match=r"duplicate service name 'dup.name'.*first.*second"):

        @service(name="dup.name")
        def second() -> int:
            return 2

    assert registry.get("dup.name") is first


def test_scopes_must_be_a_list_not_a_string() -> None:
    with pytest.raises(RegistryError, match="scopes and permissions must be lists"):
        service(name="scoped.wrong", scopes="science")(lambda: None)


def test_positional_only_parameters_are_refused() -> None:
    def f(a: int, /) -> int:
        return a

    with pytest.raises(RegistryError, match="positional-only"):
        service(name="posonly")(f)


def test_unresolvable_annotation_is_a_clear_error() -> None:
    def f(a: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    with pytest.raises(RegistryError, match="cannot resolve annotation 'NoSuchType'"):
        service(name="unresolvable")(f)


def test_string_ndarray_annotations_resolve_without_numpy_in_scope(scratch: list[str]) -> None:
    scratch.append("arr.quoted")

    @service(name="arr.quoted")
    def quoted(x: "np.ndarray", y: "numpy.ndarray") -> "np.ndarray":  # noqa: F821, UP037
        return x

    kwargs = quoted.bind({"x": [1, 2], "y": np.zeros(2)}, lax=True)
    assert isinstance(kwargs["x"], np.ndarray) and kwargs["x"].tolist() == [1, 2]
    assert quoted.returns["type"] == "array"


def test_bind_converts_json_values_from_type_hints(scratch: list[str]) -> None:
    scratch.append("conv")

    @service(name="conv")
    def conv(when: datetime.datetime, n: int = 3) -> None:
        pass

    kwargs = conv.bind({"when": "2020-01-02T03:04:05Z"}, lax=True)
    assert kwargs == {"when": datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)}
    assert conv.bind({"when": "2020-01-02T03:04:05Z", "n": "4"}, lax=True)["n"] == 4
    # msgpack carries real ints: a numeric string is not one there.
    with pytest.raises(ValidationError) as caught:
        conv.bind({"when": "2020-01-02T03:04:05Z", "n": "4"}, lax=False)
    assert set(caught.value.details) == {"n"}


def test_bind_reports_every_problem_at_once(scratch: list[str]) -> None:
    scratch.append("many")

    @service(name="many")
    def many(a: int, b: list[int], c: str) -> None:
        pass

    with pytest.raises(ValidationError) as caught:
        many.bind({"a": "x", "b": [1, "two"], "zzz": 1}, lax=False)
    details = caught.value.details
    assert set(details) == {"a", "b", "c", "zzz"}
    assert "b[1]" in details["b"]


def test_unannotated_parameters_take_any_value(scratch: list[str]) -> None:
    scratch.append("anything")

    @service(name="anything")
    def anything(value, other: Any = None):  # type: ignore[no-untyped-def]
        return value

    marker = object()
    assert anything.bind({"value": marker, "other": marker}, lax=False)["value"] is marker


def test_async_functions_are_marked(scratch: list[str]) -> None:
    scratch.append("later")

    @service(name="later")
    async def later() -> int:
        return 1

    assert later.is_async


def test_service_errors_are_plain_exceptions_of_their_own_type() -> None:
    class Overdrawn(ServiceError):
        status = 409

    error = Overdrawn("balance too low", details={"missing": 3})
    assert (error.type, error.status, error.message) == ("Overdrawn", 409, "balance too low")
    assert error.to_wire() == {
        "error": {"type": "Overdrawn", "message": "balance too low", "details": {"missing": 3}}
    }
