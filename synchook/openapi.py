"""The OpenAPI 3.1 document of CONTRACT §4, written as data, served at ``GET /openapi.json``.

Request schemas mirror the pydantic bodies (unknown fields refused: ``additionalProperties: false``).
Response schemas require only what every response carries and leave objects open, so adding a field to
a response never breaks a client. ``tests/kernel/test_openapi.py`` checks the paths against the app's routes.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from synchook.auth.models import ALL_SCOPES
from synchook.settings import Settings

Schema = dict[str, Any]

_ULID = "[0-9A-HJKMNP-TV-Z]{26}"
_PROVIDERS = ["google", "microsoft"]
_JOB_STATUSES = ["queued", "running", "completed", "failed"]
_DELIVERY_STATUSES = ["pending", "succeeded", "failed", "dead", "cancelled"]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


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


_TIME: Schema = {"type": "string", "format": "date-time", "description": "UTC, ISO 8601 with milliseconds and Z"}
_TIME_OR_NULL: Schema = _nullable(_TIME)
# What the API accepts as a date-time input: ISO 8601 dates, or date-times with a time zone (naive ones are 422).
_TIME_INPUT: Schema = {
    "type": "string",
    "maxLength": 64,
    "description": "ISO 8601 date (00:00 UTC) or date-time with Z or an offset",
}


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
    "TriggerSync": _obj(
        {
            "mode": {"type": "string", "enum": ["incremental", "full"], "default": "incremental"},
            "provider": _nullable({"type": "string", "enum": _PROVIDERS}),
            "from_date": _nullable({**_TIME_INPUT, "description": "only with mode=full; default now−90 days"}),
            "to_date": _nullable({**_TIME_INPUT, "description": "only with mode=full; default now+180 days"}),
        },
        closed=True,
    ),
    "SyncAccepted": _obj(
        {
            "job_id": {"type": "string", "pattern": f"^cal_sync_{_ULID}$"},
            "status": {"type": "string", "enum": _JOB_STATUSES},
            "mode": {"type": "string", "enum": ["incremental", "full"]},
            "queued_at": _TIME,
        },
        required=["job_id", "status", "mode", "queued_at"],
    ),
    "SyncJob": _obj(
        {
            "job_id": {"type": "string"},
            "status": {"type": "string", "enum": _JOB_STATUSES},
            "mode": {"type": "string", "enum": ["incremental", "full"]},
            "provider": _nullable({"type": "string", "enum": _PROVIDERS}),
            "from_date": _TIME_OR_NULL,
            "to_date": _TIME_OR_NULL,
            "queued_at": _TIME,
            "started_at": _TIME_OR_NULL,
            "completed_at": _TIME_OR_NULL,
            "stats": _nullable(
                _obj(
                    {
                        k: {"type": "integer"}
                        for k in ("calendars", "events_created", "events_updated", "events_deleted")
                    }
                )
            ),
            "error": _nullable(_obj({"code": {"type": "string"}, "message": {"type": "string"}})),
            "retry": _nullable(
                {
                    **_obj(
                        {
                            "attempt": {"type": "integer", "minimum": 2, "description": "the try that goes out next"},
                            "next_attempt_at": _TIME,
                            "last_error": _nullable(_obj({"code": {"type": "string"}, "message": {"type": "string"}})),
                        },
                        required=["attempt", "next_attempt_at", "last_error"],
                    ),
                    "description": "while a provider request is retried (unreachable, throttling, 5xx); "
                    "null otherwise. The retries give up after SYNCHOOK_MAX_THROTTLE_WAIT seconds of waiting.",
                }
            ),
        },
        required=["job_id", "status", "mode", "queued_at"],
    ),
    "ConnectionCreate": _obj(
        {
            "provider": {"type": "string", "enum": _PROVIDERS},
            "account": {"type": "string", "minLength": 1, "maxLength": 320},
            "access_token": {"type": "string", "minLength": 1, "maxLength": 4096},
            "refresh_token": {"type": "string", "minLength": 1, "maxLength": 4096},
            "expires_at": _nullable(_TIME_INPUT),
        },
        required=["provider", "account", "access_token", "refresh_token"],
        closed=True,
    ),
    "Connection": _obj(
        {
            "id": {"type": "string", "pattern": "^conn_"},
            "provider": {"type": "string", "enum": _PROVIDERS},
            "account": {"type": "string"},
            "status": {"type": "string"},
            "created_at": _TIME,
            "last_synced_at": _TIME_OR_NULL,
        },
        required=["id", "provider", "account", "status", "created_at"],
    ),
    "CalendarEvent": _obj(
        {"id": {"type": "string"}, "calendar_id": {"type": "string"}},
        required=["id"],
    ),
    "SubscriptionCreate": _obj(
        {
            "url": {"type": "string", "description": "https (plain http and private addresses only when allowed)"},
            "event_types": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 50},
            "description": _nullable({"type": "string", "maxLength": 1000}),
            "providers": _nullable({"type": "array", "items": {"type": "string", "enum": _PROVIDERS}, "minItems": 1}),
            "rate_limit_per_second": _nullable({"type": "integer", "minimum": 1, "maximum": 100_000}),
            "signature_type": {"type": "string", "enum": ["hmac-sha256", "ed25519"], "default": "hmac-sha256"},
        },
        required=["url", "event_types"],
        closed=True,
    ),
    "SubscriptionUpdate": _obj(
        {
            "url": {"type": "string"},
            "event_types": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 50},
            "description": _nullable({"type": "string", "maxLength": 1000}),
            "providers": _nullable({"type": "array", "items": {"type": "string", "enum": _PROVIDERS}, "minItems": 1}),
            "rate_limit_per_second": _nullable({"type": "integer", "minimum": 1, "maximum": 100_000}),
            "status": {"type": "string", "enum": ["enabled", "disabled"]},
        },
        closed=True,
    ),
    "Subscription": _obj(
        {
            "id": {"type": "string", "pattern": f"^sub_{_ULID}$"},
            "url": {"type": "string"},
            "event_types": {"type": "array", "items": {"type": "string"}},
            "providers": _nullable({"type": "array", "items": {"type": "string", "enum": _PROVIDERS}}),
            "description": {"type": ["string", "null"]},
            "status": {"type": "string", "enum": ["enabled", "disabled"]},
            "disabled_reason": {"type": ["string", "null"]},
            "signature_type": {"type": "string", "enum": ["hmac-sha256", "ed25519"]},
            "public_key": {"type": ["string", "null"], "description": "whpk_… for ed25519 subscriptions"},
            "rate_limit_per_second": {"type": ["integer", "null"]},
            "created_at": _TIME,
            "updated_at": _TIME,
        },
        required=["id", "url", "event_types", "providers", "status", "created_at"],
    ),
    "SubscriptionSecret": _obj(
        {
            "secret": {"type": "string", "pattern": "^(whsec|whsk)_", "description": "whsec_… (HMAC) or whsk_…"},
            "public_key": {"type": ["string", "null"]},
            "previous_secret_expires_at": _TIME_OR_NULL,
            "previous_public_key": {"type": ["string", "null"]},
        },
        required=["secret"],
    ),
    "SubscriptionCreated": {
        "allOf": [
            _ref("Subscription"),
            _obj(
                {
                    "secret": {
                        "type": "string",
                        "pattern": "^whsec_",
                        "description": "hmac-sha256 subscriptions only; ed25519 ones give public_key alone",
                    },
                    "previous_secret_expires_at": _TIME_OR_NULL,
                    "previous_public_key": {"type": ["string", "null"]},
                }
            ),
        ]
    },
    "RotateSecret": _obj(
        {"expire_previous_in": {"type": "integer", "minimum": 0, "maximum": 30 * 86_400, "default": 86_400}},
        closed=True,
    ),
    "TestEventSent": _obj({"event_id": {"type": "string", "pattern": "^evt_"}}, required=["event_id"]),
    "EventType": _obj(
        {"name": {"type": "string"}, "description": {"type": "string"}, "schema": {"type": "object"}},
        required=["name", "schema"],
    ),
    "Event": _obj(
        {
            "id": {"type": "string", "pattern": "^evt_"},
            "type": {"type": "string"},
            "timestamp": _TIME,
            "data": {"type": "object"},
        },
        required=["id", "type"],
    ),
    "Attempt": _obj(
        {
            "number": {"type": "integer", "minimum": 1},
            "started_at": _TIME,
            "duration_ms": {"type": "integer", "minimum": 0},
            "status_code": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]},
            "response_body": {"type": ["string", "null"], "description": "truncated to 4 KiB"},
        },
        required=["number", "started_at", "duration_ms"],
    ),
    "Delivery": _obj(
        {
            "id": {"type": "string"},
            "event_id": {"type": "string"},
            "event_type": {"type": "string"},
            "subscription_id": {"type": "string"},
            "status": {"type": "string", "enum": _DELIVERY_STATUSES},
            "created_at": _TIME,
        },
        required=["id", "status"],
    ),
    "DeliveryDetail": {
        "allOf": [
            _ref("Delivery"),
            _obj({"attempts": {"type": "array", "items": _ref("Attempt")}}, required=["attempts"]),
        ]
    },
    "ReplayCreate": _obj(
        {
            "since": _TIME_INPUT,
            "until": _nullable({**_TIME_INPUT, "description": "must be after since (422 naming until); default now"}),
            "subscription_id": _nullable({"type": "string"}),
            "event_types": _nullable({"type": "array", "items": {"type": "string"}, "minItems": 1}),
            "status": _nullable(
                {"type": "array", "items": {"type": "string", "enum": ["failed", "dead"]}, "minItems": 1}
            ),
            "confirm_count": _nullable(
                {
                    "type": "integer",
                    "minimum": 0,
                    "description": "the match count (from a dry run, or the replay_too_large message): needed, "
                    "and must equal the count, when more than SYNCHOOK_REPLAY_MAX deliveries match",
                }
            ),
        },
        required=["since"],
        closed=True,
    ),
    "Replay": _obj(
        {
            "id": {"type": "string", "pattern": "^rpl_"},
            "matched": {"type": "integer", "minimum": 0},
            "status": {"type": "string"},
        },
        required=["id", "status"],
    ),
    "Health": _obj(
        {"status": {"type": "string"}, "checks": {"type": "object", "additionalProperties": {"type": "string"}}},
        required=["status"],
    ),
}

_RATE_HEADERS: dict[str, Schema] = {
    "X-RateLimit-Limit": {"$ref": "#/components/headers/X-RateLimit-Limit"},
    "X-RateLimit-Remaining": {"$ref": "#/components/headers/X-RateLimit-Remaining"},
    "X-RateLimit-Reset": {"$ref": "#/components/headers/X-RateLimit-Reset"},
}
_REQUEST_ID_HEADER: dict[str, Schema] = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
_NO_STORE_HEADER: dict[str, Schema] = {"Cache-Control": {"$ref": "#/components/headers/Cache-Control"}}

HEADERS: dict[str, Schema] = {
    "X-Request-ID": {
        "description": "The caller's X-Request-ID when it sent a sane one, else a new req_… id",
        "schema": {"type": "string"},
    },
    "X-RateLimit-Limit": {"description": "Requests allowed in the current window", "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Requests left in the current window", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "When the window resets, Unix seconds", "schema": {"type": "integer"}},
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}},
    "Cache-Control": {"description": "no-store: the response holds a secret", "schema": {"type": "string"}},
}

# Every error status an endpoint may answer, with the codes it carries.
_ERRORS: dict[int, str] = {
    401: "`invalid_key`: the Authorization header is missing, malformed, or the key is unknown, revoked or expired",
    403: "`insufficient_permissions`: the key lacks the scope this operation needs",
    404: "`not_found`: no such object in this workspace (objects of other workspaces are not found, never 403)",
    409: "a conflict; the code says which (e.g. `sync_in_progress`, `replay_in_progress`, `replay_finished`)",
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
    "since": {"name": "since", "in": "query", "description": "Only items at or after", "schema": _TIME_INPUT},
    "until": {"name": "until", "in": "query", "description": "Only items before", "schema": _TIME_INPUT},
    "Idempotency-Key": {
        "name": "Idempotency-Key",
        "in": "header",
        "description": "A UUID; the same key with the same body within 24 h returns the first response again",
        "schema": {"type": "string", "format": "uuid"},
    },
}


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "description": description, "schema": schema}


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


_PAGING = [_param("limit"), _param("cursor")]


def _paths() -> dict[str, dict[str, Schema]]:
    job_id = _path("job_id", "A sync job id (cal_sync_…)")
    conn_id = _path("connection_id", "A connection id (conn_…)")
    sub_id = _path("id", "A subscription id (sub_…)")
    delivery_id = _path("id", "A delivery id")
    replay_id = _path("id", "A bulk replay id (rpl_…)")
    health = "Operational endpoint, no API key; "
    return {
        "/healthz": {
            "get": _op(
                "Liveness",
                tag="operations",
                scope=None,
                ok_status=200,
                ok_schema=_ref("Health"),
                description=health + "answers while the process runs.",
            )
        },
        "/readyz": {
            "get": {
                **_op(
                    "Readiness",
                    tag="operations",
                    scope=None,
                    ok_status=200,
                    ok_schema=_ref("Health"),
                    description=health + "200 when the database and Redis are reachable, else 503.",
                ),
                "responses": {
                    "200": {"description": "Ready", "content": {"application/json": {"schema": _ref("Health")}}},
                    "503": {"description": "Not ready", "content": {"application/json": {"schema": _ref("Health")}}},
                },
            }
        },
        "/metrics": {
            "get": {
                **_op(
                    "Prometheus metrics",
                    tag="operations",
                    scope=None,
                    ok_status=200,
                    ok_schema=None,
                    description=health + "Prometheus text format. Expose it to your scraper only, never publicly. "
                    "When SYNCHOOK_METRICS_TOKEN is set it needs `Authorization: Bearer <token>` (else 401 "
                    "`invalid_key`). Figures read from the database are cached for a few seconds per process.",
                ),
                "responses": {
                    "200": {
                        "description": "Prometheus exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _error_response(
                        401, "`invalid_key`: SYNCHOOK_METRICS_TOKEN is set and was not given", authenticated=False
                    ),
                },
            }
        },
        "/openapi.json": {
            "get": _op(
                "This document",
                tag="operations",
                scope=None,
                ok_status=200,
                ok_schema={"type": "object"},
                description="The OpenAPI 3.1 description of this API; no API key.",
            )
        },
        "/docs": {
            "get": {
                **_op(
                    "API reference",
                    tag="operations",
                    scope=None,
                    ok_status=200,
                    ok_schema=None,
                    description="This document rendered as an HTML page (self-contained, works offline); no API key.",
                ),
                "responses": {
                    "200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/admin": {
            "get": {
                **_op(
                    "Admin console",
                    tag="admin",
                    scope=None,
                    ok_status=200,
                    ok_schema=None,
                    description="The web console (HTML): deliveries, attempts, replays; signed in with an API key "
                    "holding `admin:webhooks`.",
                ),
                "responses": {
                    "200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/v1/calendar/sync": {
            "post": _op(
                "Trigger Calendar Sync",
                tag="calendar",
                scope="write:calendar",
                ok_status=202,
                ok_schema=_envelope(_ref("SyncAccepted")),
                errors=(409,),
                parameters=[_param("Idempotency-Key")],
                body="TriggerSync",
                body_required=False,
                description="An empty body means incremental. On this endpoint the X-RateLimit-* headers describe "
                "the cap of 6 accepted on-demand syncs per rolling hour per workspace (429 `rate_limited` beyond). "
                "403 `insufficient_permissions` also when the workspace (or provider) has no connected calendar. "
                "409 `sync_in_progress` while an overlapping full sync is queued or running; "
                "409 `idempotency_in_progress` while the first request with this Idempotency-Key is in flight; "
                "422 `idempotency_key_reused` for the same key with another body.",
                ok_headers={
                    "Idempotent-Replayed": {
                        "description": "`true` when this is the stored response of an earlier request with this key",
                        "schema": {"type": "string", "enum": ["true"]},
                    }
                },
            )
        },
        "/v1/calendar/sync/{job_id}": {
            "get": _op(
                "Get a sync job",
                tag="calendar",
                scope="read:calendar",
                ok_status=200,
                ok_schema=_envelope(_ref("SyncJob")),
                errors=(404,),
                parameters=[job_id],
            )
        },
        "/v1/calendar/connections": {
            "post": _op(
                "Connect a calendar account",
                tag="calendar",
                scope="write:calendar",
                ok_status=201,
                ok_schema=_envelope(_ref("Connection")),
                errors=(409,),
                body="ConnectionCreate",
                description="Tokens are stored encrypted and never returned. 409 `connection_exists` when this "
                "account is already connected.",
            ),
            "get": _op(
                "List connections",
                tag="calendar",
                scope="read:calendar",
                ok_status=200,
                ok_schema=_list_envelope(_ref("Connection")),
                parameters=_PAGING,
            ),
        },
        "/v1/calendar/connections/{connection_id}": {
            "get": _op(
                "Get a connection",
                tag="calendar",
                scope="read:calendar",
                ok_status=200,
                ok_schema=_envelope(_ref("Connection")),
                errors=(404,),
                parameters=[conn_id],
            ),
            "delete": _op(
                "Disconnect a calendar account",
                tag="calendar",
                scope="write:calendar",
                ok_status=204,
                ok_schema=None,
                errors=(404,),
                parameters=[conn_id],
            ),
        },
        "/v1/calendar/events": {
            "get": _op(
                "List synced calendar events",
                tag="calendar",
                scope="read:calendar",
                ok_status=200,
                ok_schema=_list_envelope(_ref("CalendarEvent")),
                parameters=[
                    *_PAGING,
                    _query("calendar_id", {"type": "string"}, "Only events of this calendar"),
                    _param("since"),
                    _param("until"),
                ],
                errors=(422,),
            )
        },
        "/v1/webhooks/event-types": {
            "get": _op(
                "List the event-type catalogue",
                tag="webhooks",
                scope="read:webhooks",
                ok_status=200,
                ok_schema=_list_envelope(_ref("EventType")),
                description="Each type with the JSON Schema of its webhook body.",
            )
        },
        "/v1/webhooks/subscriptions": {
            "post": _op(
                "Create a subscription",
                tag="webhooks",
                scope="write:webhooks",
                ok_status=201,
                ok_schema=_envelope(_ref("SubscriptionCreated")),
                ok_headers=_NO_STORE_HEADER,
                body="SubscriptionCreate",
                description="An HMAC subscription's `whsec_` secret appears only here and at the secret endpoint; an "
                "ed25519 subscription answers with its `public_key` alone (the `whsk_` signing key is only at the "
                "secret endpoint). 422 `invalid_url` for an invalid URL, or (unless allowed) one that is not https "
                "or resolves to a private address.",
            ),
            "get": _op(
                "List subscriptions",
                tag="webhooks",
                scope="read:webhooks",
                ok_status=200,
                ok_schema=_list_envelope(_ref("Subscription")),
                parameters=_PAGING,
            ),
        },
        "/v1/webhooks/subscriptions/{id}": {
            "get": _op(
                "Get a subscription",
                tag="webhooks",
                scope="read:webhooks",
                ok_status=200,
                ok_schema=_envelope(_ref("Subscription")),
                errors=(404,),
                parameters=[sub_id],
            ),
            "patch": _op(
                "Update a subscription",
                tag="webhooks",
                scope="write:webhooks",
                ok_status=200,
                ok_schema=_envelope(_ref("Subscription")),
                errors=(404,),
                parameters=[sub_id],
                body="SubscriptionUpdate",
            ),
            "delete": _op(
                "Delete a subscription",
                tag="webhooks",
                scope="write:webhooks",
                ok_status=204,
                ok_schema=None,
                errors=(404,),
                parameters=[sub_id],
                description="Pending deliveries are cancelled.",
            ),
        },
        "/v1/webhooks/subscriptions/{id}/secret": {
            "get": _op(
                "Get the signing secret",
                tag="webhooks",
                scope="write:webhooks",
                ok_status=200,
                ok_schema=_envelope(_ref("SubscriptionSecret")),
                ok_headers=_NO_STORE_HEADER,
                errors=(404,),
                parameters=[sub_id],
                description="Needs write:webhooks: a read-only key never sees a secret. Answered with "
                "Cache-Control: no-store.",
            )
        },
        "/v1/webhooks/subscriptions/{id}/secret/rotate": {
            "post": _op(
                "Rotate the signing secret",
                tag="webhooks",
                scope="write:webhooks",
                ok_status=200,
                ok_schema=_envelope(_ref("SubscriptionSecret")),
                ok_headers=_NO_STORE_HEADER,
                errors=(404,),
                parameters=[sub_id],
                body="RotateSecret",
                body_required=False,
                description="Until expire_previous_in seconds have passed, every delivery carries both signatures. "
                "Answered with Cache-Control: no-store.",
            )
        },
        "/v1/webhooks/subscriptions/{id}/test": {
            "post": _op(
                "Send a test event",
                tag="webhooks",
                scope="write:webhooks",
                ok_status=202,
                ok_schema=_envelope(_ref("TestEventSent")),
                errors=(404,),
                parameters=[sub_id],
                description="Sends a `webhook.test` event to this subscription alone.",
            )
        },
        "/v1/webhooks/events": {
            "get": _op(
                "List events",
                tag="webhooks",
                scope="read:webhooks",
                ok_status=200,
                ok_schema=_list_envelope(_ref("Event")),
                parameters=[
                    *_PAGING,
                    _query("type", {"type": "string"}, "Only events of this type"),
                    _param("since"),
                    _param("until"),
                ],
                errors=(422,),
            )
        },
        "/v1/webhooks/deliveries": {
            "get": _op(
                "List deliveries",
                tag="webhooks",
                scope="read:webhooks",
                ok_status=200,
                ok_schema=_list_envelope(_ref("Delivery")),
                parameters=[
                    *_PAGING,
                    _query("status", {"type": "string", "enum": _DELIVERY_STATUSES}, "Only deliveries in this status"),
                    _query("subscription_id", {"type": "string"}, "Only deliveries to this subscription"),
                    _query("event_type", {"type": "string"}, "Only deliveries of this event type"),
                    _param("since"),
                    _param("until"),
                ],
                errors=(422,),
            )
        },
        "/v1/webhooks/deliveries/{id}": {
            "get": _op(
                "Get a delivery with its attempts",
                tag="webhooks",
                scope="read:webhooks",
                ok_status=200,
                ok_schema=_envelope(_ref("DeliveryDetail")),
                errors=(404,),
                parameters=[delivery_id],
            )
        },
        "/v1/webhooks/deliveries/{id}/replay": {
            "post": _op(
                "Replay a delivery",
                tag="webhooks",
                scope="admin:webhooks",
                ok_status=202,
                ok_schema=_envelope({"type": "object"}),
                errors=(404, 409),
                parameters=[delivery_id],
                description="Starts a fresh retry sequence; audited.",
            )
        },
        "/v1/webhooks/replays": {
            "post": _op(
                "Bulk replay",
                tag="webhooks",
                scope="admin:webhooks",
                ok_status=202,
                ok_schema=_envelope(_ref("Replay")),
                body="ReplayCreate",
                errors=(404, 409),
                parameters=[_query("dry_run", {"type": "boolean"}, "Only count what would be sent (200, no replay)")],
                description="Replays every matching delivery (default statuses failed and dead); with "
                "`subscription_id`, events of the range that never had a delivery to it are sent too; audited. "
                "More than SYNCHOOK_REPLAY_MAX matches: 422 `replay_too_large` (its message gives the count) "
                "unless `confirm_count` equals the count. While a bulk replay of the workspace is queued or "
                "running: 409 `replay_in_progress`.",
            ),
            "get": _op(
                "List replays (the audit trail)",
                tag="webhooks",
                scope="admin:webhooks",
                ok_status=200,
                ok_schema=_list_envelope(_ref("Replay")),
                parameters=[*_PAGING, _query("kind", {"type": "string", "enum": ["single", "bulk"]}, "Only this kind")],
                errors=(422,),
            ),
        },
        "/v1/webhooks/replays/{id}": {
            "get": _op(
                "Get a bulk replay's progress",
                tag="webhooks",
                scope="admin:webhooks",
                ok_status=200,
                ok_schema=_envelope(_ref("Replay")),
                errors=(404,),
                parameters=[replay_id],
            )
        },
        "/v1/webhooks/replays/{id}/cancel": {
            "post": _op(
                "Cancel a bulk replay",
                tag="webhooks",
                scope="admin:webhooks",
                ok_status=200,
                ok_schema=_envelope(_ref("Replay")),
                errors=(404, 409),
                parameters=[replay_id],
                description="Stops a queued or running bulk replay after its current batch; 409 `replay_finished` "
                "once it has ended.",
            )
        },
    }


def _with_operation_ids(paths: dict[str, dict[str, Schema]]) -> dict[str, dict[str, Schema]]:
    for path, operations in paths.items():
        for method, op in operations.items():
            slug = "".join(c if c.isalnum() else "_" for c in path.strip("/")).strip("_") or "root"
            op["operationId"] = f"{method}_{slug}".replace("__", "_")
    return paths


@functools.cache
def _document() -> Schema:
    from synchook import __version__

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Synchook",
            "version": __version__,
            "description": "Trigger calendar syncs and receive their lifecycle events as signed webhooks. "
            "All /v1 endpoints take `Authorization: Bearer wbk_…`; each operation names the scope it needs "
            f"({', '.join(ALL_SCOPES)}). Lists are paginated with `limit` (1–100, default 20) and `cursor`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "calendar", "description": "Calendar sync (CONTRACT §4.1)"},
            {"name": "webhooks", "description": "Subscriptions, events, deliveries, replays (§4.2, §4.3)"},
            {"name": "admin", "description": "The web console"},
            {"name": "operations", "description": "Health, readiness, metrics, this document"},
        ],
        "paths": _with_operation_ids(_paths()),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "wbk_…",
                    "description": "An API key from `synchook keys create`; scopes: " + ", ".join(ALL_SCOPES),
                }
            },
            "schemas": SCHEMAS,
            "parameters": PARAMETERS,
            "headers": HEADERS,
        },
    }


def build_spec(*, root_path: str = "") -> Schema:
    """The document, with `servers` pointing at SYNCHOOK_ROOT_PATH when set."""
    spec = copy.deepcopy(_document())
    spec["servers"] = [{"url": root_path or "/"}]
    return spec


async def openapi_json(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    return JSONResponse(build_spec(root_path=settings.root_path))


ROUTES = [Route("/openapi.json", openapi_json, methods=["GET"])]
