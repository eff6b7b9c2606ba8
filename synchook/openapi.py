"""The OpenAPI 3.1 document of CONTRACT §4, generated from the route declarations, served at ``GET /openapi.json``.

Every operation comes from an `Endpoint` (synchook/http/endpoint.py): its scope, path and query parameters,
body and response models (their JSON Schemas, via pydantic), success statuses and error codes. Request bodies
refuse unknown fields; response shapes are closed and list every field as required, so a field the API sends
but does not document cannot exist (tests/kernel/test_wire_shapes.py). What is written here by hand is only
what every operation shares: the error envelope, the rate-limit and request-id headers, the paging parameters.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from synchook.auth.models import ALL_SCOPES
from synchook.http.endpoint import Endpoint

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Schema], *, required: list[str] | None = None, closed: bool = False) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def _envelope(data: Schema) -> Schema:
    return _obj({"data": data}, required=["data"])


def _list_envelope(item: Schema) -> Schema:
    return _obj(
        {"data": {"type": "array", "items": item}, "next_cursor": {"type": ["string", "null"]}},
        required=["data", "next_cursor"],
    )


# --- Components ----------------------------------------------------------------------------------------

SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {
            "error": _obj(
                {
                    "code": {"type": "string", "description": "machine-readable, e.g. validation_error"},
                    "message": {"type": "string"},
                    "request_id": {"type": "string", "description": "equals the X-Request-ID header"},
                    "field": {"type": "string", "description": "the offending field, on 422"},
                },
                required=["code", "message", "request_id"],
            )
        },
        required=["error"],
    ),
}

_RATE_HEADERS: dict[str, Schema] = {
    "X-RateLimit-Limit": {"$ref": "#/components/headers/X-RateLimit-Limit"},
    "X-RateLimit-Remaining": {"$ref": "#/components/headers/X-RateLimit-Remaining"},
    "X-RateLimit-Reset": {"$ref": "#/components/headers/X-RateLimit-Reset"},
}
_REQUEST_ID_HEADER: dict[str, Schema] = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}

HEADERS: dict[str, Schema] = {
    "X-Request-ID": {
        "description": "The caller's X-Request-ID when it sent a sane one, else a new req_… id",
        "schema": {"type": "string"},
    },
    "X-RateLimit-Limit": {"description": "Requests allowed in the current window", "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Requests left in the current window", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "When the window resets, Unix seconds", "schema": {"type": "integer"}},
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}},
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored response of an earlier request with this Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Cache-Control": {"description": "no-store: the response holds a secret", "schema": {"type": "string"}},
}

# Every error status an endpoint may answer, with the codes it carries.
_ERRORS: dict[int, str] = {
    400: "`validation_error`: a provider notification without its required headers, or with malformed JSON",
    401: "`invalid_key`: the Authorization header is missing, malformed, or the key is unknown, revoked or expired",
    403: "`insufficient_permissions`: the key lacks the scope this operation needs",
    404: "`not_found`: no such object in this workspace (objects of other workspaces are not found, never 403)",
    409: "a conflict; the code says which (e.g. `sync_in_progress`, `replay_in_progress`, `replay_finished`)",
    410: "gone; the code says why (e.g. `cursor_expired`: the change feed no longer holds changes after this cursor)",
    413: "`payload_too_large`: the body exceeds the size limit",
    422: "`validation_error` (or a more precise code, e.g. `replay_too_large`) naming the offending field",
    429: "`rate_limited`: too many requests; see Retry-After",
    503: "`unavailable`: a backing service (database) is unavailable; retry after Retry-After",
}


def _error_response(status: int, description: str, *, authenticated: bool) -> Schema:
    headers: dict[str, Schema] = dict(_REQUEST_ID_HEADER)
    if authenticated and status not in (401, 503):
        headers.update(_RATE_HEADERS)
    if status in (429, 503):
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


PARAMETERS: dict[str, Schema] = {
    "limit": {
        "name": "limit",
        "in": "query",
        "description": "Page size",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    },
    "cursor": {
        "name": "cursor",
        "in": "query",
        "description": "The next_cursor of the previous page",
        "schema": {"type": "string"},
    },
    "Idempotency-Key": {
        "name": "Idempotency-Key",
        "in": "header",
        "description": "A UUID; the same key with the same body within 24 h returns the first response again",
        "schema": {"type": "string", "format": "uuid"},
    },
}


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


# --- Operations ----------------------------------------------------------------------------------------


def _op(
    summary: str,
    *,
    tag: str,
    scope: str | None,
    ok_status: int,
    ok_schema: Schema | None,
    errors: tuple[int, ...] = (),
    parameters: list[Schema] | None = None,
    body: str | None = None,
    body_required: bool = True,
    description: str = "",
    ok_headers: dict[str, Schema] | None = None,
) -> Schema:
    authenticated = scope is not None
    op: Schema = {"summary": summary, "tags": [tag], "operationId": "", "description": description}
    if authenticated:
        op["description"] = (f"Requires scope `{scope}`. " + description).strip()
        op["security"] = [{"bearerAuth": [scope]}]
        op["x-required-scope"] = scope
    else:
        op["security"] = []
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": _ref(body)}}}
    success: Schema = {"description": "Success", "headers": {**_REQUEST_ID_HEADER, **(ok_headers or {})}}
    if authenticated:
        success["headers"].update(_RATE_HEADERS)
    if ok_schema is not None:
        success["content"] = {"application/json": {"schema": ok_schema}}
    responses: dict[str, Schema] = {str(ok_status): success}
    codes = set(errors)
    if authenticated:
        codes |= {401, 403, 429, 503}
    if body is not None:
        codes |= {413, 422}
    if parameters and any("$ref" in p and p["$ref"].endswith(("limit", "cursor")) for p in parameters):
        codes.add(422)
    for status in sorted(codes):
        responses[str(status)] = _error_response(status, _ERRORS[status], authenticated=authenticated)
    op["responses"] = responses
    return op


# --- Operations generated from the route declarations ----------------------------------------------------

_ModelKey = tuple[type[BaseModel], JsonSchemaMode]


def _model_keys(endpoints: Sequence[Endpoint]) -> list[_ModelKey]:
    keys: dict[_ModelKey, None] = {}
    for endpoint in endpoints:
        if endpoint.query is not None:
            keys[(endpoint.query, "validation")] = None
        if endpoint.body is not None:
            keys[(endpoint.body, "validation")] = None
        if endpoint.response is not None:
            keys[(endpoint.response, "serialization")] = None
        for _, model in endpoint.alternatives:
            keys[(model, "serialization")] = None
    return list(keys)


def _ref_name(ref: Schema) -> str:
    return str(ref["$ref"]).rsplit("/", 1)[-1]


def _path_parameters(path: str) -> list[Schema]:
    return [_path(name, f"The {name.replace('_', ' ')}") for name in re.findall(r"\{(\w+)(?::\w+)?\}", path)]


def _without_null(schema: Schema) -> Schema:
    # A query parameter is absent or a string, never JSON null: `X | None = None` documents as X.
    if schema.get("default", ...) is None:
        del schema["default"]
    options = schema.get("anyOf")
    if options is not None:
        kept = [option for option in options if option != {"type": "null"}]
        if len(kept) == 1:
            del schema["anyOf"]
            schema.update({key: value for key, value in kept[0].items() if key not in schema})
    return schema


def _query_parameters(component: Schema) -> list[Schema]:
    required = set(component.get("required", ()))
    parameters: list[Schema] = []
    for name, schema in component.get("properties", {}).items():
        schema = _without_null(dict(schema))
        description = schema.pop("description", schema.get("title", name))
        schema.pop("title", None)
        if name in ("limit", "cursor"):
            parameters.append(_param(name))
            continue
        parameter: Schema = {"name": name, "in": "query", "description": description, "schema": schema}
        if name in required:
            parameter["required"] = True
        if schema.get("type") == "array" or any(s.get("type") == "array" for s in schema.get("anyOf", ())):
            parameter["explode"] = True
        parameters.append(parameter)
    return parameters


def _declared_operation(endpoint: Endpoint, refs: Mapping[Any, Schema], defs: dict[str, Schema]) -> Schema:
    parameters = _path_parameters(endpoint.path)
    if endpoint.query is not None:
        parameters += _query_parameters(defs[_ref_name(refs[(endpoint.query, "validation")])])
    if endpoint.idempotent_key_header:
        parameters.append(_param("Idempotency-Key"))
    ok_schema: Schema | None = None
    if endpoint.response is not None:
        item = refs[(endpoint.response, "serialization")]
        ok_schema = _list_envelope(item) if endpoint.many else _envelope(item)
        if not endpoint.envelope:
            ok_schema = item
    elif endpoint.media_type != "application/json":
        ok_schema = None
    op = _op(
        endpoint.summary,
        tag=endpoint.tag,
        scope=endpoint.scope,
        ok_status=endpoint.status,
        ok_schema=ok_schema,
        errors=endpoint.errors,
        parameters=parameters or None,
        body=_ref_name(refs[(endpoint.body, "validation")]) if endpoint.body is not None else None,
        body_required=endpoint.body_required,
        description=endpoint.description,
        ok_headers={name: {"$ref": f"#/components/headers/{name}"} for name in endpoint.extra_response_headers},
    )
    wrap = _envelope if endpoint.envelope else (lambda schema: schema)
    for status, model in endpoint.alternatives:
        op["responses"][str(status)] = {
            **op["responses"][str(endpoint.status)],
            "content": {"application/json": {"schema": wrap(refs[(model, "serialization")])}},
        }
    for status, media_type in endpoint.text_alternatives:
        op["responses"][str(status)] = {
            "description": "Success",
            "headers": dict(_REQUEST_ID_HEADER),
            "content": {media_type: {"schema": {"type": "string"}}},
        }
    if endpoint.query is not None:
        op["responses"].setdefault("422", _error_response(422, _ERRORS[422], authenticated=endpoint.scope is not None))
    if endpoint.response is None and endpoint.status != 204:
        # A handler answering its own Response: a page, an exposition, a document (JSON: some object).
        raw: Schema = {"type": "object"} if endpoint.media_type == "application/json" else {"type": "string"}
        op["responses"][str(endpoint.status)]["content"] = {endpoint.media_type: {"schema": raw}}
    return op


def declared_paths(endpoints: Sequence[Endpoint]) -> tuple[dict[str, dict[str, Schema]], dict[str, Schema]]:
    """The path items and component schemas of `endpoints`, from their models' JSON Schemas."""
    keys = _model_keys(endpoints)
    refs, top = models_json_schema(keys, ref_template="#/components/schemas/{model}")
    defs: dict[str, Schema] = dict(top.get("$defs", {}))
    paths: dict[str, dict[str, Schema]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _declared_operation(endpoint, refs, defs)
    # A query model is documented as its parameters, not as a schema of its own.
    for endpoint in endpoints:
        if endpoint.query is not None:
            defs.pop(_ref_name(refs[(endpoint.query, "validation")]), None)
    return paths, defs


def _with_operation_ids(paths: dict[str, dict[str, Schema]]) -> dict[str, dict[str, Schema]]:
    for path, operations in paths.items():
        for method, op in operations.items():
            slug = "".join(c if c.isalnum() else "_" for c in path.strip("/")).strip("_") or "root"
            op["operationId"] = f"{method}_{slug}".replace("__", "_")
    return paths


def build_spec(endpoints: Sequence[Endpoint] = (), *, root_path: str = "") -> Schema:
    """The document of `endpoints` (mounted under /v1 when their path says so), `servers` at SYNCHOOK_ROOT_PATH."""
    from synchook import __version__

    declared, schemas = declared_paths(endpoints)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Synchook",
            "version": __version__,
            "description": "Trigger calendar syncs and receive their lifecycle events as signed webhooks. "
            "All /v1 endpoints take `Authorization: Bearer wbk_…`; each operation names the scope it needs "
            f"({', '.join(ALL_SCOPES)}). Lists are paginated with `limit` (1–100, default 20) and `cursor`.",
        },
        "servers": [{"url": root_path or "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "calendar", "description": "Calendar sync (CONTRACT §4.1)"},
            {"name": "webhooks", "description": "Subscriptions, events, deliveries, replays (§4.2, §4.3)"},
            {"name": "admin", "description": "The web console"},
            {"name": "operations", "description": "Health, readiness, metrics, this document"},
            {"name": "providers", "description": "Push notifications from Google and Microsoft (§7), no API key"},
        ],
        "paths": _with_operation_ids(declared),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "wbk_…",
                    "description": "An API key from `synchook keys create`; scopes: " + ", ".join(ALL_SCOPES),
                }
            },
            "schemas": {**copy.deepcopy(SCHEMAS), **schemas},
            "parameters": PARAMETERS,
            "headers": HEADERS,
        },
    }
