"""The wire protocol through Django's test client: statuses, envelopes, checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client as DjangoClient
from django.test import override_settings

from servicewire import codecs

pytestmark = pytest.mark.django_db

JSON = "application/json"
MSGPACK = "application/msgpack"


def post(
    client: DjangoClient,
    name: str,
    body: Any = None,
    *,
    content_type: str = JSON,
    raw: bytes | None = None,
    **headers: str,
) -> Any:
    if raw is None:
        raw = b"" if body is None else codecs.CODECS[_codec(content_type)].encode(body)
    return client.generic("POST", f"/services/{name}", raw, content_type=content_type, **headers)


def _codec(content_type: str) -> str:
    return "msgpack" if "msgpack" in content_type else "json"


def error_of(response: Any) -> dict[str, Any]:
    codec = codecs.codec_for_content_type(response["Content-Type"])
    assert codec is not None, response["Content-Type"]
    envelope = codec.decode(response.content)
    assert set(envelope) == {"error"}
    assert set(envelope["error"]) == {"type", "message", "details"}
    return envelope["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("content_type", [JSON, MSGPACK, "application/vnd.msgpack"])
def test_call_returns_the_value_in_the_request_codec(
    client: DjangoClient, auth: dict[str, str], content_type: str
) -> None:
    response = post(client, "add", {"a": 2, "b": 40}, content_type=content_type, headers=auth)
    assert response.status_code == 200
    codec = codecs.codec_for_content_type(response["Content-Type"])
    assert codec is codecs.CODECS[_codec(content_type)]
    assert codec.decode(response.content) == 42


def test_accept_chooses_the_response_codec(client: DjangoClient, auth: dict[str, str]) -> None:
    response = post(client, "add", {"a": 1, "b": 2}, headers={**auth, "Accept": MSGPACK})
    assert response["Content-Type"] == MSGPACK
    assert codecs.MSGPACK.decode(response.content) == 3


def test_empty_body_means_no_arguments(client: DjangoClient, auth: dict[str, str]) -> None:
    for content_type in ("", "application/octet-stream", JSON):
        response = client.generic(
            "POST", "/services/echo", b"", content_type=content_type, headers=auth
        )
        assert response.status_code == 200
        assert response["Content-Type"] == JSON
        assert json.loads(response.content) is None


def test_json_arguments_are_converted_from_type_hints(
    client: DjangoClient, auth: dict[str, str]
) -> None:
    args = {
        "when": "2024-05-01T12:30:00+02:00",
        "day": "2024-05-01",
        "amount": "12.50",
        "ident": "12345678-1234-5678-1234-567812345678",
        "pair": [1, "x"],
        "tags": ["a", "b"],
        "span": "PT90S",
    }
    response = post(client, "types.typed", args, headers=auth)
    assert response.status_code == 200, response.content
    out = json.loads(response.content)
    assert out["types"] == ["datetime", "date", "Decimal", "UUID", "tuple", "set", "timedelta"]
    assert out["when"] == "2024-05-01T12:30:00+02:00"
    assert out["amount"] == "12.50"


def test_validation_error_names_each_bad_or_missing_argument(
    client: DjangoClient, auth: dict[str, str]
) -> None:
    response = post(client, "add", {"a": "one", "c": 3}, headers=auth)
    assert response.status_code == 422
    error = error_of(response)
    assert error["type"] == "ValidationError"
    assert set(error["details"]) == {"a", "b", "c"}
    assert "int" in error["details"]["a"]
    assert error["details"]["b"] == "missing required argument"
    assert error["details"]["c"] == "unexpected argument"


def test_msgpack_is_strict_about_types(client: DjangoClient, auth: dict[str, str]) -> None:
    response = post(client, "add", {"a": "1", "b": 2}, content_type=MSGPACK, headers=auth)
    assert response.status_code == 422
    assert set(error_of(response)["details"]) == {"a"}


def test_service_error_travels_with_type_status_and_details(
    client: DjangoClient, auth: dict[str, str]
) -> None:
    response = post(client, "withdraw", {"account": "acc-1", "amount": "3.50"}, headers=auth)
    assert response.status_code == 409
    error = error_of(response)
    assert error == {
        "type": "Overdrawn",
        "message": "balance too low",
        "details": {"missing": "3.50", "account": "acc-1"},
    }


def test_unexpected_exception_reveals_nothing(
    client: DjangoClient, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    response = post(client, "boom", {}, headers={**auth, "X-Request-ID": "req-boom-1"})
    assert response.status_code == 500
    error = error_of(response)
    assert error["type"] == "InternalError"
    assert "secret internal detail" not in response.content.decode()
    assert "req-boom-1" in error["message"]
    # ...but the server's log has it, with the request id.
    logged = [r for r in caplog.records if r.name == "servicewire"]
    assert any("req-boom-1" in r.getMessage() and r.exc_info for r in logged)


def test_unexpected_exception_shows_internals_under_debug(
    client: DjangoClient, auth: dict[str, str]
) -> None:
    with override_settings(DEBUG=True):
        response = post(client, "boom", {}, headers=auth)
    assert response.status_code == 500
    assert "secret internal detail" in error_of(response)["message"]


def test_async_service(client: DjangoClient, auth: dict[str, str]) -> None:
    response = post(client, "slow_add", {"a": 1, "b": 2}, headers=auth)
    assert json.loads(response.content) == 3


def test_http_response_passes_through(client: DjangoClient, auth: dict[str, str]) -> None:
    response = post(client, "raw", {}, headers=auth)
    assert response.status_code == 201
    assert response["Content-Type"] == "text/plain"
    assert response.content == b"plain text"


def test_extra_keywords_reach_a_service_taking_kwargs(
    client: DjangoClient, auth: dict[str, str]
) -> None:
    response = post(client, "kwargs_ok", {"a": 1, "z": [1, 2]}, headers=auth)
    assert json.loads(response.content) == {"a": 1, "z": [1, 2]}


# --- every error status -----------------------------------------------------


def test_unknown_service_is_404(client: DjangoClient, auth: dict[str, str]) -> None:
    response = post(client, "no.such.service", {}, headers=auth)
    assert response.status_code == 404
    assert error_of(response)["type"] == "NotFound"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405(client: DjangoClient, auth: dict[str, str], method: str) -> None:
    response = client.generic(method, "/services/add", headers=auth)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert error_of(response)["type"] == "MethodNotAllowed"


def test_unknown_content_type_is_415(client: DjangoClient, auth: dict[str, str]) -> None:
    response = post(client, "add", raw=b"a=1&b=2", content_type="text/plain", headers=auth)
    assert response.status_code == 415
    assert error_of(response)["type"] == "UnsupportedMediaType"


def test_pickle_is_refused_by_default(client: DjangoClient, auth: dict[str, str]) -> None:
    import pickle

    body = pickle.dumps({"a": 1, "b": 2})
    response = post(
        client, "add", raw=body, content_type="application/x-python-pickle", headers=auth
    )
    assert response.status_code == 415


def test_unacceptable_accept_is_406_in_json(client: DjangoClient, auth: dict[str, str]) -> None:
    response = post(client, "add", {"a": 1, "b": 2}, headers={**auth, "Accept": "text/html"})
    assert response.status_code == 406
    assert response["Content-Type"] == JSON
    assert error_of(response)["type"] == "NotAcceptable"


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"a": 1, "b": ', b"\xff\xfe\x00", b"[1, 2]", b'"just a string"'],
    ids=["broken", "truncated", "binary", "array-body", "string-body"],
)
def test_undecodable_json_body_is_400(
    client: DjangoClient, auth: dict[str, str], raw: bytes
) -> None:
    response = post(client, "add", raw=raw, headers=auth)
    assert response.status_code == 400
    assert error_of(response)["type"] == "BadRequest"


def test_deeply_nested_json_is_400_and_server_unharmed(
    client: DjangoClient, auth: dict[str, str]
) -> None:
    raw = b'{"value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = post(client, "echo", raw=raw, headers=auth)
    assert response.status_code == 400
    assert "nest" in error_of(response)["message"].lower()
    assert json.loads(post(client, "add", {"a": 1, "b": 1}, headers=auth).content) == 2


def test_truncated_msgpack_is_400(client: DjangoClient, auth: dict[str, str]) -> None:
    whole = codecs.MSGPACK.encode({"value": [1, 2, 3, "four", {"five": 5.0}]})
    for cut in range(1, len(whole)):
        response = post(client, "echo", raw=whole[:cut], content_type=MSGPACK, headers=auth)
        assert response.status_code == 400, cut


def test_huge_declared_msgpack_length_is_400(client: DjangoClient, auth: dict[str, str]) -> None:
    # a map holding an array that claims 4 billion items, with none sent
    raw = b"\x81\xa5value\xdd\xff\xff\xff\xff"
    response = post(client, "echo", raw=raw, content_type=MSGPACK, headers=auth)
    assert response.status_code == 400


def test_random_bytes_never_crash_the_server(client: DjangoClient, auth: dict[str, str]) -> None:
    import random

    rng = random.Random(20121617)
    for _ in range(200):
        raw = rng.randbytes(rng.randrange(1, 300))
        for content_type in (JSON, MSGPACK):
            response = post(client, "echo", raw=raw, content_type=content_type, headers=auth)
            assert response.status_code in (200, 400, 422), (raw, response.content)
            if response.status_code != 200:
                error_of(response)


@override_settings(SERVICEWIRE={"REQUIRE_HTTPS": False, "MAX_BODY_BYTES": 1000})
def test_body_over_the_bound_is_413_unread(client: DjangoClient, auth: dict[str, str]) -> None:
    response = post(client, "echo", {"value": "x" * 2000}, headers=auth)
    assert response.status_code == 413
    assert error_of(response)["details"] == {"limit": 1000}


@override_settings(SERVICEWIRE={"REQUIRE_HTTPS": False, "MAX_DEPTH": 3})
def test_depth_bound_is_configurable(client: DjangoClient, auth: dict[str, str]) -> None:
    assert post(client, "echo", {"value": [[1]]}, headers=auth).status_code == 200
    assert post(client, "echo", {"value": [[[[1]]]]}, headers=auth).status_code == 400


def test_request_id_is_echoed_when_sane(client: DjangoClient, auth: dict[str, str]) -> None:
    sent = post(client, "add", {"a": 1, "b": 2}, headers={**auth, "X-Request-ID": "abc-123"})
    assert sent["X-Request-ID"] == "abc-123"
    insane = post(client, "add", {"a": 1, "b": 2}, headers={**auth, "X-Request-ID": "a b\x01"})
    assert insane["X-Request-ID"] != "a b\x01"
    assert len(insane["X-Request-ID"]) == 32
    failed = post(client, "nope", {}, headers=auth)
    assert failed["X-Request-ID"]


# --- credentials --------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer sw_short_key"],
    ids=["absent", "empty", "malformed", "basic", "short"],
)
def test_no_valid_key_is_401_with_www_authenticate(
    client: DjangoClient, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    response = post(client, "add", {"a": 1, "b": 2}, headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert error_of(response)["type"] == "Unauthorized"


def test_wrong_secret_and_unknown_key_get_the_same_answer(client: DjangoClient, key: str) -> None:
    key_id = key.split("_")[1]
    wrong_secret = f"sw_{key_id}_{'A' * 43}"
    unknown_id = f"sw_{'B' * 12}_{key.split('_')[2]}"
    a = post(client, "add", {"a": 1, "b": 2}, headers={"Authorization": f"Bearer {wrong_secret}"})
    b = post(client, "add", {"a": 1, "b": 2}, headers={"Authorization": f"Bearer {unknown_id}"})
    assert a.status_code == b.status_code == 401
    assert error_of(a) == error_of(b)


def test_revoked_key_is_refused_on_the_next_call(client: DjangoClient, key: str) -> None:
    from django.utils import timezone

    from servicewire.models import ApiKey

    headers = {"Authorization": f"Bearer {key}"}
    assert post(client, "add", {"a": 1, "b": 2}, headers=headers).status_code == 200
    ApiKey.objects.filter(key_id=key.split("_")[1]).update(revoked=timezone.now())
    assert post(client, "add", {"a": 1, "b": 2}, headers=headers).status_code == 401


def test_scoped_service_needs_one_of_its_scopes(client: DjangoClient, make_key: Any) -> None:
    plain = make_key("no-scopes")
    science = make_key("scientist", scopes=["science", "other"])
    args = {"samples": [1.0, 2.0]}
    refused = post(client, "science.spectrum", args, headers={"Authorization": f"Bearer {plain}"})
    assert refused.status_code == 403
    assert error_of(refused)["type"] == "Forbidden"
    allowed = post(client, "science.spectrum", args, headers={"Authorization": f"Bearer {science}"})
    assert allowed.status_code == 200
    assert json.loads(allowed.content)["total"] == 3.0


@override_settings(SERVICEWIRE={"REQUIRE_HTTPS": True})
def test_plain_http_is_refused_not_redirected(client: DjangoClient, auth: dict[str, str]) -> None:
    response = post(client, "add", {"a": 1, "b": 2}, headers=auth)
    assert response.status_code == 403
    assert "HTTPS" in error_of(response)["message"]
    assert post(client, "add", {"a": 1, "b": 2}, headers=auth, secure=True).status_code == 200


@override_settings(
    SERVICEWIRE={"REQUIRE_HTTPS": True}, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")
)
def test_proxy_header_counts_only_where_django_says(
    client: DjangoClient, auth: dict[str, str]
) -> None:
    headers = {**auth, "X-Forwarded-Proto": "https"}
    assert post(client, "add", {"a": 1, "b": 2}, headers=headers).status_code == 200


@override_settings(SERVICEWIRE={"REQUIRE_HTTPS": True})
def test_proxy_header_is_ignored_by_default(client: DjangoClient, auth: dict[str, str]) -> None:
    headers = {**auth, "X-Forwarded-Proto": "https"}
    assert post(client, "add", {"a": 1, "b": 2}, headers=headers).status_code == 403


@override_settings(SERVICEWIRE={"REQUIRE_HTTPS": False, "HIDE_FROM_UNAUTHENTICATED": True})
@pytest.mark.parametrize("path", ["/services/", "/services/add", "/services/openapi.json"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_hide_mode_answers_exactly_like_a_missing_url(
    client: DjangoClient, auth: dict[str, str], path: str, method: str
) -> None:
    missing = client.generic(method, "/no-such-page-anywhere")
    hidden = client.generic(method, path)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content
    assert sorted(hidden.headers.items()) == sorted(missing.headers.items())
    # ...while a caller with a key still gets the service.
    assert post(client, "add", {"a": 1, "b": 2}, headers=auth).status_code == 200


# --- discovery ---------------------------------------------------------------


def test_discovery_lists_only_what_the_caller_may_call(client: DjangoClient, make_key: Any) -> None:
    plain = make_key("plain")
    response = client.get("/services/", headers={"Authorization": f"Bearer {plain}"})
    assert response.status_code == 200
    entries = {s["name"]: s for s in json.loads(response.content)["services"]}
    assert "add" in entries and "science.spectrum" not in entries
    add = entries["add"]
    assert add["doc"] == "Add two integers."
    assert add["parameters"]["properties"] == {"a": {"type": "integer"}, "b": {"type": "integer"}}
    assert add["parameters"]["required"] == ["a", "b"]
    assert add["returns"] == {"type": "integer"}
    science = make_key("sci", scopes=["science"])
    response = client.get("/services/", headers={"Authorization": f"Bearer {science}"})
    assert "science.spectrum" in {s["name"] for s in json.loads(response.content)["services"]}


def test_discovery_needs_a_key(client: DjangoClient) -> None:
    assert client.get("/services/").status_code == 401


def test_openapi_describes_the_json_codec(client: DjangoClient, auth: dict[str, str]) -> None:
    response = client.get("/services/openapi.json", headers=auth)
    assert response.status_code == 200
    doc = json.loads(response.content)
    assert doc["openapi"].startswith("3.1")
    add = doc["paths"]["/add"]["post"]
    schema = add["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["a", "b"]
    assert add["responses"]["200"]["content"]["application/json"]["schema"] == {"type": "integer"}
    assert "422" in add["responses"]
    assert doc["servers"][0]["url"].endswith("/services")


# --- the original pattern: a service routed directly as a view ---------------


def test_service_routed_directly_as_a_view(client: DjangoClient, auth: dict[str, str]) -> None:
    response = client.generic(
        "POST", "/direct/add", json.dumps({"a": 5, "b": 6}), content_type=JSON, headers=auth
    )
    assert response.status_code == 200
    assert json.loads(response.content) == 11
    assert client.post("/direct/add", content_type=JSON).status_code == 401


def test_decorated_function_still_calls_as_python() -> None:
    from tests.testapp.services import add

    assert add(2, 3) == 5
