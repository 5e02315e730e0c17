"""System checks: each speaks up when it should and only then."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import CheckMessage, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from django.urls import path

from servicewire.registry import Service
from tests.testapp import services

# This module doubles as a URLconf (ROOT_URLCONF="tests.test_checks") that
# routes nothing to servicewire unless a test puts a pattern here.
urlpatterns: list[Any] = []


def servicewire_messages() -> dict[str, CheckMessage]:
    """The servicewire messages of a full check run, by id."""
    return {m.id: m for m in run_checks() if m.id and m.id.startswith("servicewire.")}


@override_settings(DEBUG=False, SERVICEWIRE={"REQUIRE_HTTPS": False})
def test_w001_http_allowed_on_a_production_site() -> None:
    found = servicewire_messages()
    assert "servicewire.W001" in found
    assert "clear text" in found["servicewire.W001"].msg


@pytest.mark.parametrize(
    ("debug", "servicewire"),
    [
        (False, {}),  # REQUIRE_HTTPS defaults to on when DEBUG is off
        (False, {"REQUIRE_HTTPS": True}),
        (True, {"REQUIRE_HTTPS": False}),
        (True, {}),
    ],
)
def test_w001_quiet_when_https_is_required_or_debugging(
    debug: bool, servicewire: dict[str, Any]
) -> None:
    with override_settings(DEBUG=debug, SERVICEWIRE=servicewire):
        assert "servicewire.W001" not in servicewire_messages()


@pytest.mark.parametrize(
    ("servicewire", "complaint"),
    [
        ({"REQUIRE_HTTP": False}, "Unknown SERVICEWIRE setting(s): REQUIRE_HTTP"),
        ({"MAX_BODY_BYTES": "10MB"}, "must be int, not str"),
        ({"REQUIRE_HTTPS": "yes"}, "must be bool, not str"),
        ({"MAX_DEPTH": -1}, "must not be negative"),
        (["REQUIRE_HTTPS"], "must be a dict"),
    ],
)
def test_e001_invalid_settings_are_reported(servicewire: Any, complaint: str) -> None:
    with override_settings(SERVICEWIRE=servicewire):
        found = servicewire_messages()
    assert complaint in found["servicewire.E001"].msg
    assert found["servicewire.E001"].is_serious()
    # The broken dict is reported once, not again as an HTTPS warning.
    assert "servicewire.W001" not in found


def test_e001_stops_management_commands() -> None:
    with (
        override_settings(SERVICEWIRE={"MAX_DEPHT": 3}),
        pytest.raises(SystemCheckError, match=r"servicewire\.E001.*MAX_DEPHT"),
    ):
        call_command("check")


@override_settings(SERVICEWIRE={"REQUIRE_HTTPS": True, "MAX_BODY_BYTES": 1024})
def test_e001_quiet_for_valid_settings() -> None:
    assert "servicewire.E001" not in servicewire_messages()


def test_w002_quiet_when_mounted_with_include() -> None:
    # The test site mounts path("services/", include("servicewire.urls")).
    assert "servicewire.W002" not in servicewire_messages()


@override_settings(ROOT_URLCONF="tests.test_checks")
def test_w002_when_nothing_routes_to_servicewire() -> None:
    found = servicewire_messages()
    assert "servicewire.W002" in found
    assert 'include("servicewire.urls")' in (found["servicewire.W002"].hint or "")


def test_w002_quiet_when_a_service_is_routed_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(services.add, Service)
    monkeypatch.setattr(
        "tests.test_checks.urlpatterns", [path("direct/add", services.add)], raising=True
    )
    with override_settings(ROOT_URLCONF="tests.test_checks"):
        assert "servicewire.W002" not in servicewire_messages()
