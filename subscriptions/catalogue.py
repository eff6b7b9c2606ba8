"""The event-type catalogue: every type a subscription can ask for, with the JSON Schema of its webhook body.

Subscriptions name catalogue types or wildcards: ``*`` (everything) and ``prefix.*`` where ``prefix`` is a
dot-separated group of catalogue names (``calendar.*``, ``calendar.sync.*``, ``webhook.*``, ...).
A wildcard matches the types of its group at any depth, so matching an event looks up the type itself,
each of its ``prefix.*`` groups and ``*`` (see :func:`patterns_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from synchook.providers import Provider
from synchook.timeutil import isoformat

__all__ = [
    "ANY_EVENT",
    "CATALOGUE",
    "EVENT_TYPES",
    "PROVIDERS",
    "EventType",
    "is_known_pattern",
    "known_patterns",
    "patterns_for",
    "subscription_disabled_data",
    "webhook_test_data",
]

ANY_EVENT = "*"
PROVIDERS: tuple[str, ...] = tuple(p.value for p in Provider)  # CalDAV too (CONTRACT §8)
_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_ULID = "[0-9A-HJKMNP-TV-Z]{26}"
_TIMESTAMP: dict[str, Any] = {"type": "string", "format": "date-time"}
_NULLABLE_TIMESTAMP: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    description: str
    data_schema: dict[str, Any]

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the whole webhook body (CONTRACT §5) for this type."""
        return {
            "$schema": _SCHEMA_DIALECT,
            "title": self.name,
            "description": self.description,
            "type": "object",
            "required": ["id", "type", "timestamp", "data"],
            "properties": {
                "id": {"type": "string", "pattern": f"^evt_{_ULID}$"},
                "type": {"const": self.name},
                "timestamp": _TIMESTAMP,
                "data": self.data_schema,
            },
        }

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "schema": self.schema()}


def _sync_data(status: str) -> dict[str, Any]:
    schema = _sync_data_base(status)
    if status == "completed":
        # §6.2: what the sync found, and the change sequence a receiver must have seen to have all of it.
        schema["required"].append("changes")
        schema["properties"]["changes"] = {
            "type": "object",
            "required": ["created", "updated", "deleted", "through_sequence"],
            "properties": {
                "created": {"type": "integer", "minimum": 0},
                "updated": {"type": "integer", "minimum": 0},
                "deleted": {"type": "integer", "minimum": 0},
                "through_sequence": {"type": "integer", "minimum": 0},
            },
        }
    return schema


def _sync_data_base(status: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [
            "job_id",
            "workspace_id",
            "mode",
            "provider",
            "status",
            "queued_at",
            "started_at",
            "completed_at",
            "stats",
            "error",
        ],
        "properties": {
            "job_id": {"type": "string", "pattern": f"^cal_sync_{_ULID}$"},
            "workspace_id": {"type": "string"},
            "mode": {"enum": ["incremental", "full"]},
            # Who asked: POST /v1/calendar/sync, the background poll, or a provider notification (§7). Not
            # required: events recorded before push (and replayed now) lack it.
            "trigger": {"enum": ["api", "background", "push"]},
            # The one connection (a poll) or calendar (a push sync) the job covers; null: all of its provider.
            "connection_id": {"type": ["string", "null"], "pattern": "^conn_"},
            "calendar_id": {"type": ["string", "null"], "pattern": "^cal_"},
            "provider": {"enum": [*PROVIDERS, None]},
            "status": {"const": status},
            "queued_at": _TIMESTAMP,
            "started_at": _NULLABLE_TIMESTAMP,
            "completed_at": _NULLABLE_TIMESTAMP,
            "stats": {
                "type": "object",
                "required": ["calendars", "events_created", "events_updated", "events_deleted"],
                "properties": {
                    name: {"type": "integer", "minimum": 0}
                    for name in ("calendars", "events_created", "events_updated", "events_deleted")
                },
            },
            "error": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    },
                ]
            },
        },
    }


_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
_EVENT_TIME: dict[str, Any] = {
    "type": ["object", "null"],
    "required": ["date_time", "date", "time_zone"],
    "properties": {
        "date_time": _NULLABLE_TIMESTAMP,
        "date": {"type": ["string", "null"], "format": "date"},
        "time_zone": _NULLABLE_STRING,
    },
}
# §6.1, the same for every provider.
NORMALIZED_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "id", "calendar_id", "connection_id", "provider", "provider_event_id", "ical_uid", "title", "description",
        "location", "start", "end", "all_day", "status", "busy", "organizer", "attendees", "recurring_event_id",
        "original_start", "conference_url", "html_link", "updated_at",
    ],
    "properties": {
        "id": {"type": "string", "pattern": f"^cev_{_ULID}$"},
        "calendar_id": {"type": "string", "pattern": f"^cal_{_ULID}$"},
        "connection_id": {"type": "string", "pattern": f"^conn_{_ULID}$"},
        "provider": {"enum": list(PROVIDERS)},
        "provider_event_id": {"type": "string"},
        "ical_uid": _NULLABLE_STRING,
        "title": _NULLABLE_STRING,
        "description": {"type": ["string", "null"], "description": "Cut to 8 KiB"},
        "location": _NULLABLE_STRING,
        "start": _EVENT_TIME,
        "end": _EVENT_TIME,
        "all_day": {"type": "boolean"},
        "status": {"enum": ["confirmed", "tentative", "cancelled"]},
        "busy": {"type": "boolean"},
        "organizer": {
            "type": ["object", "null"],
            "required": ["email", "name"],
            "properties": {"email": _NULLABLE_STRING, "name": _NULLABLE_STRING},
        },
        "attendees": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["email", "name", "response", "optional"],
                "properties": {
                    "email": _NULLABLE_STRING,
                    "name": _NULLABLE_STRING,
                    "response": {"enum": ["accepted", "declined", "tentative", "needs_action"]},
                    "optional": {"type": "boolean"},
                },
            },
        },
        "recurring_event_id": _NULLABLE_STRING,
        "original_start": _EVENT_TIME,
        "conference_url": _NULLABLE_STRING,
        "html_link": _NULLABLE_STRING,
        "updated_at": _NULLABLE_TIMESTAMP,
    },
}  # fmt: skip


def _change_data(kind: str) -> dict[str, Any]:
    """§6.2: one change of the feed, as a webhook body's data."""
    return {
        "type": "object",
        "required": [
            "sequence", "workspace_id", "job_id", "connection_id", "calendar_id", "provider", "initial", "event",
            "changed_fields", "previous",
        ],
        "properties": {
            "sequence": {"type": "integer", "minimum": 1},
            "workspace_id": {"type": "string"},
            "job_id": {"type": ["string", "null"], "pattern": f"^cal_sync_{_ULID}$"},
            "connection_id": {"type": "string", "pattern": f"^conn_{_ULID}$"},
            "calendar_id": {"type": "string", "pattern": f"^cal_{_ULID}$"},
            "provider": {"enum": list(PROVIDERS)},
            "initial": {"type": "boolean"} if kind == "created" else {"const": False},
            "event": NORMALIZED_EVENT_SCHEMA,
            "changed_fields": {
                "type": "array", "items": {"type": "string"}, "maxItems": 0 if kind == "deleted" else 21,
            },
            "previous": {"type": "null"} if kind == "created" else {"type": "object"},
        },
    }  # fmt: skip


_TEST_DATA: dict[str, Any] = {
    "type": "object",
    "required": ["workspace_id", "subscription_id", "message"],
    "properties": {
        "workspace_id": {"type": "string"},
        "subscription_id": {"type": "string", "pattern": f"^sub_{_ULID}$"},
        "message": {"type": "string"},
    },
}

_DISABLED_DATA: dict[str, Any] = {
    "type": "object",
    "required": ["workspace_id", "subscription_id", "url", "reason", "disabled_at"],
    "properties": {
        "workspace_id": {"type": "string"},
        "subscription_id": {"type": "string", "pattern": f"^sub_{_ULID}$"},
        "url": {"type": "string"},
        "reason": {"type": "string"},
        "disabled_at": _TIMESTAMP,
    },
}

CATALOGUE: tuple[EventType, ...] = (
    EventType("calendar.sync.queued", "A calendar sync job was accepted and queued.", _sync_data("queued")),
    EventType("calendar.sync.started", "A calendar sync job started running.", _sync_data("running")),
    EventType(
        "calendar.sync.completed", "A calendar sync job finished; stats say what changed.", _sync_data("completed")
    ),
    EventType("calendar.sync.failed", "A calendar sync job failed; error says why.", _sync_data("failed")),
    EventType(
        "calendar.event.created",
        "An event appeared in a synced calendar (initial: true during the calendar's first import).",
        _change_data("created"),
    ),
    EventType(
        "calendar.event.updated",
        "An event changed in content; changed_fields names the fields, previous holds their old values.",
        _change_data("updated"),
    ),
    EventType(
        "calendar.event.deleted",
        "An event went away; event is the last known one, with status cancelled.",
        _change_data("deleted"),
    ),
    EventType("webhook.test", "A test event, sent on request to one subscription only.", _TEST_DATA),
    EventType(
        "webhook.subscription.disabled",
        "A subscription was disabled because every delivery to it failed for too long.",
        _DISABLED_DATA,
    ),
)
EVENT_TYPES: frozenset[str] = frozenset(t.name for t in CATALOGUE)


def patterns_for(event_type: str) -> list[str]:
    """Every filter pattern that selects ``event_type``: itself, each ``prefix.*`` group, and ``*``."""
    parts = event_type.split(".")
    groups = [".".join(parts[:i]) + ".*" for i in range(len(parts) - 1, 0, -1)]
    return [event_type, *groups, ANY_EVENT]


def known_patterns() -> frozenset[str]:
    """Every pattern a subscription may use: catalogue names, their groups, and ``*``."""
    return frozenset(p for t in CATALOGUE for p in patterns_for(t.name))


_KNOWN = known_patterns()


def is_known_pattern(pattern: str) -> bool:
    return pattern in _KNOWN


def webhook_test_data(*, workspace_id: str, subscription_id: str) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id,
        "subscription_id": subscription_id,
        "message": "This is a test event from Synchook.",
    }


def subscription_disabled_data(
    *, workspace_id: str, subscription_id: str, url: str, reason: str, disabled_at: datetime
) -> dict[str, Any]:
    """The data of a ``webhook.subscription.disabled`` event (for the delivery engine that disables)."""
    return {
        "workspace_id": workspace_id,
        "subscription_id": subscription_id,
        "url": _shown_url(url),
        "reason": reason,
        "disabled_at": isoformat(disabled_at),
    }


def _shown_url(url: str) -> str:
    """The URL without userinfo, query and fragment: they may carry the receiver's secret, and this event goes to
    every other subscription of the workspace."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
