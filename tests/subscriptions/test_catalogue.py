"""The event-type catalogue: names, wildcard groups, and JSON Schemas that describe the §5 bodies."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from subscriptions.catalogue import (
    CATALOGUE,
    EVENT_TYPES,
    is_known_pattern,
    patterns_for,
    subscription_disabled_data,
    webhook_test_data,
)
from synchook.ids import new_id

_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "string": str,
    "integer": int,
    "null": type(None),
    "array": list,
}


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """The JSON Schema subset the catalogue uses: type, const, enum, pattern, minimum, required, properties, oneOf."""
    if "oneOf" in schema:
        return sum(conforms(value, option) for option in schema["oneOf"]) == 1
    if "const" in schema and value != schema["const"]:
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if isinstance(value, bool) or not any(isinstance(value, _TYPES[t]) for t in types):
            return False
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        return False
    if isinstance(value, int) and value < schema.get("minimum", value):
        return False
    if isinstance(value, dict):
        if any(name not in value for name in schema.get("required", [])):
            return False
        return all(conforms(value[k], sub) for k, sub in schema.get("properties", {}).items() if k in value)
    return True


def sync_body(event_type: str, status: str, **data: Any) -> dict[str, Any]:
    return {
        "id": new_id("evt"),
        "type": event_type,
        "timestamp": "2026-11-23T10:00:00.000Z",
        "data": {
            "job_id": new_id("cal_sync"),
            "workspace_id": "ws_1",
            "mode": "incremental",
            "trigger": "push",
            "provider": "google",
            "status": status,
            "queued_at": "2026-11-23T10:00:00.000Z",
            "started_at": None,
            "completed_at": None,
            "stats": {"calendars": 0, "events_created": 0, "events_updated": 0, "events_deleted": 0},
            "error": None,
        }
        | data,
    }


def schema_of(name: str) -> dict[str, Any]:
    return next(t for t in CATALOGUE if t.name == name).schema()


def test_catalogue_names() -> None:
    assert set(EVENT_TYPES) == {
        "calendar.sync.queued",
        "calendar.sync.started",
        "calendar.sync.completed",
        "calendar.sync.failed",
        "calendar.event.created",
        "calendar.event.updated",
        "calendar.event.deleted",
        "webhook.test",
        "webhook.subscription.disabled",
    }


def test_patterns_for_an_event_type() -> None:
    assert patterns_for("calendar.sync.completed") == [
        "calendar.sync.completed",
        "calendar.sync.*",
        "calendar.*",
        "*",
    ]
    assert patterns_for("webhook.test") == ["webhook.test", "webhook.*", "*"]


@pytest.mark.parametrize(
    "pattern",
    [
        *sorted(EVENT_TYPES),
        "*",
        "calendar.*",
        "calendar.sync.*",
        "calendar.event.*",
        "webhook.*",
        "webhook.subscription.*",
    ],
)
def test_known_patterns(pattern: str) -> None:
    assert is_known_pattern(pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "calendar",
        "calendar.sync",
        "calendar.sync.completed.*",
        "calendar.sync.com*",
        "billing.*",
        "**",
        ".*",
        "*.*",
    ],
)
def test_unknown_patterns(pattern: str) -> None:
    assert not is_known_pattern(pattern)


@pytest.mark.parametrize(
    ("event_type", "status", "extra"),
    [
        ("calendar.sync.queued", "queued", {}),
        ("calendar.sync.started", "running", {"started_at": "2026-11-23T10:00:01.000Z"}),
        (
            "calendar.sync.completed",
            "completed",
            {
                "started_at": "2026-11-23T10:00:01.000Z",
                "completed_at": "2026-11-23T10:00:09.000Z",
                "stats": {"calendars": 2, "events_created": 5, "events_updated": 1, "events_deleted": 0},
                "changes": {"created": 5, "updated": 1, "deleted": 0, "through_sequence": 42},
            },
        ),
        (
            "calendar.sync.failed",
            "failed",
            {"completed_at": "2026-11-23T10:00:09.000Z", "error": {"code": "provider_error", "message": "503"}},
        ),
    ],
)
def test_sync_schemas_accept_their_bodies(event_type: str, status: str, extra: dict[str, Any]) -> None:
    schema = schema_of(event_type)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert conforms(sync_body(event_type, status, **extra), schema)


@pytest.mark.parametrize(
    "change",
    [
        {"status": "bogus"},
        {"mode": "partial"},
        {"trigger": "cron"},
        {"provider": "yahoo"},
        {"stats": {"calendars": -1, "events_created": 0, "events_updated": 0, "events_deleted": 0}},
        {"error": {"code": "x"}},
        {"job_id": "job_1"},
    ],
)
def test_sync_schemas_reject_wrong_bodies(change: dict[str, Any]) -> None:
    body = sync_body("calendar.sync.completed", "completed")
    body["data"]["changes"] = {"created": 0, "updated": 0, "deleted": 0, "through_sequence": 0}
    body["data"] |= change
    assert not conforms(body, schema_of("calendar.sync.completed"))


def test_sync_schema_rejects_another_type() -> None:
    assert not conforms(sync_body("calendar.sync.failed", "completed"), schema_of("calendar.sync.completed"))


def test_webhook_test_schema_describes_its_data() -> None:
    sub_id = new_id("sub")
    body = {
        "id": new_id("evt"),
        "type": "webhook.test",
        "timestamp": "2026-11-23T10:00:00.000Z",
        "data": webhook_test_data(workspace_id="ws_1", subscription_id=sub_id),
    }
    assert conforms(body, schema_of("webhook.test"))
    assert not conforms(body | {"data": {}}, schema_of("webhook.test"))


def test_disabled_schema_describes_its_data() -> None:
    data = subscription_disabled_data(
        workspace_id="ws_1",
        subscription_id=new_id("sub"),
        url="https://r.example.com/",
        reason="every delivery failed for 5 days",
        disabled_at=datetime(2026, 11, 23, tzinfo=UTC),
    )
    body = {
        "id": new_id("evt"),
        "type": "webhook.subscription.disabled",
        "timestamp": data["disabled_at"],
        "data": data,
    }
    assert data["disabled_at"] == "2026-11-23T00:00:00.000Z"
    assert conforms(body, schema_of("webhook.subscription.disabled"))
