"""The OpenAPI 3.1 document of a site's services, for the JSON codec.

Built from the schemas that registration already computed; it knows nothing
of HTTP requests (the view passes in the mount's URL).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from servicewire import __version__
from servicewire.registry import Service

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}

_ERROR_STATUSES = {
    "400": "BadRequest: the body could not be decoded",
    "401": "Unauthorized: no valid API key",
    "403": "Forbidden: HTTPS required, or the client lacks a scope",
    "404": "NotFound",
    "406": "NotAcceptable",
    "413": "PayloadTooLarge",
    "415": "UnsupportedMediaType",
    "422": "ValidationError: details name each bad or missing argument",
    "500": "InternalError",
}


def _lift_defs(schema: dict[str, Any], into: dict[str, Any]) -> dict[str, Any]:
    """Move ``$defs`` to ``components/schemas`` and point references there."""
    defs = schema.get("$defs")
    if not defs:
        return schema
    into.update(defs)
    rest: dict[str, Any] = _rewrite_refs({k: v for k, v in schema.items() if k != "$defs"})
    return rest


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" else _rewrite_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _operation(svc: Service, components: dict[str, Any]) -> dict[str, Any]:
    entry = svc.describe()
    parameters = {
        **entry["parameters"],
        "properties": {
            name: _lift_defs(schema, components)
            for name, schema in entry["parameters"]["properties"].items()
        },
    }
    error_ref = {"$ref": "#/components/schemas/Error"}
    responses: dict[str, Any] = {
        "200": {
            "description": "The return value",
            "content": {"application/json": {"schema": _lift_defs(entry["returns"], components)}},
        }
    }
    for status, description in _ERROR_STATUSES.items():
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": error_ref}},
        }
    operation: dict[str, Any] = {
        "operationId": svc.name,
        "summary": svc.doc.splitlines()[0] if svc.doc else svc.name,
        "requestBody": {
            "required": bool(parameters.get("required")),
            "content": {"application/json": {"schema": parameters}},
        },
        "responses": responses,
    }
    if svc.doc:
        operation["description"] = svc.doc
    if svc.scopes:
        operation["x-servicewire-scopes"] = sorted(svc.scopes)
    return operation


def openapi_document(services: Iterable[Service], mount_url: str) -> dict[str, Any]:
    """OpenAPI 3.1 describing ``services`` as ``POST <mount_url><name>``."""
    components: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths = {f"/{svc.name}": {"post": _operation(svc, components)} for svc in services}
    return {
        "openapi": "3.1.0",
        "info": {"title": "servicewire services", "version": __version__},
        "servers": [{"url": mount_url.rstrip("/")}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }
