"""An event's provider fields (PROVIDERS.md §5), built from neutral arguments and edited as the provider spells them.

`put_event` takes neutral keyword arguments (`EventSpec`); `google_body` / `graph_body` turn them into
the fields Google v3 / Graph send. Edits (`apply_edit`) and attendee answers (`set_response`) work on
those provider fields directly, so a control call changes exactly what a real edit would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from synchook.fakes._common import utc
from synchook.fakes.models import GOOGLE, FakeEvent

# The Windows names Graph uses most, for rendering local times of events created with one.
WINDOWS_ZONES = {
    "UTC": "UTC",
    "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "Pacific Standard Time": "America/Los_Angeles",
    "Tokyo Standard Time": "Asia/Tokyo",
    "India Standard Time": "Asia/Kolkata",
    "AUS Eastern Standard Time": "Australia/Sydney",
}

# Neutral answers (CONTRACT §6.1) in each provider's words, and back.
GOOGLE_RESPONSES = {
    "accepted": "accepted",
    "declined": "declined",
    "tentative": "tentative",
    "needs_action": "needsAction",
}
GRAPH_RESPONSES = {
    "accepted": "accepted",
    "declined": "declined",
    "tentative": "tentativelyAccepted",
    "needs_action": "none",
}

# Fields the fakes own: an edit cannot set them (they follow from the edit itself).
BOOKKEEPING = frozenset(
    {"id", "kind", "etag", "updated", "created", "lastModifiedDateTime", "@odata.type", "@odata.etag"}
)


@dataclass
class EventSpec:
    """What `put_event` accepts besides id/summary/start/end: the §5 fields, provider-neutral."""

    time_zone: str | None = None
    description: str | None = None
    location: str | None = None
    organizer: tuple[str, str | None] | None = None  # email, name
    attendees: Sequence[dict[str, Any]] | None = None  # {"email", "name"?, "response"?, "optional"?}
    conference_url: str | None = None
    recurring_event_id: str | None = None
    original_start: datetime | date | None = None
    status: str | None = None  # confirmed | tentative | cancelled
    busy: bool | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # raw provider fields, laid over the rest


def zone(name: str | None) -> ZoneInfo:
    """The zone to render local times in: IANA names, the common Windows names, else UTC."""
    try:
        return ZoneInfo(WINDOWS_ZONES.get(name or "UTC", name or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def google_defaults(event_id: str, account: str) -> dict[str, Any]:
    """What Google sends for every event it stores, whether or not the creator set it."""
    return {
        "status": "confirmed",
        "htmlLink": f"https://www.google.com/calendar/event?eid={event_id}",
        "iCalUID": f"{event_id}@google.com",
        "sequence": 0,
        "creator": {"email": account, "self": True},
        "organizer": {"email": account, "self": True},
        "reminders": {"useDefault": True},
        "eventType": "default",
    }


def graph_defaults(event_id: str, account: str) -> dict[str, Any]:
    """What Graph sends for every event: empty strings and lists where nothing was set."""
    return {
        "iCalUId": f"040000008200E00074C5B7101A82E008{event_id.encode().hex()[:32].upper()}",
        "webLink": f"https://outlook.office365.com/owa/?itemid={event_id}&exvsurl=1&path=/calendar/item",
        "bodyPreview": "",
        "body": {"contentType": "html", "content": ""},
        "location": {"displayName": "", "locationType": "default", "uniqueIdType": "unknown", "address": {}},
        "showAs": "busy",
        "isCancelled": False,
        "type": "singleInstance",
        "seriesMasterId": None,
        "isOnlineMeeting": False,
        "onlineMeetingProvider": "unknown",
        "onlineMeeting": None,
        "organizer": {"emailAddress": {"name": account, "address": account}},
        "attendees": [],
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
    }


def google_body(summary: str | None, spec: EventSpec, event_id: str) -> dict[str, Any]:
    """The Google fields `spec` sets (start/end are rendered per request)."""
    body: dict[str, Any] = {}
    if summary is not None:
        body["summary"] = summary
    if spec.description is not None:
        body["description"] = spec.description
    if spec.location is not None:
        body["location"] = spec.location
    if spec.organizer is not None:
        body["organizer"] = _drop_none({"email": spec.organizer[0], "displayName": spec.organizer[1]})
    if spec.attendees is not None:
        body["attendees"] = [
            _drop_none(
                {
                    "email": a["email"],
                    "displayName": a.get("name"),
                    "responseStatus": GOOGLE_RESPONSES[a.get("response", "needs_action")],
                    "optional": True if a.get("optional") else None,  # Google leaves it out when false
                }
            )
            for a in spec.attendees
        ]
    if spec.conference_url is not None:
        code = spec.conference_url.rstrip("/").rsplit("/", 1)[-1]
        body["hangoutLink"] = spec.conference_url
        body["conferenceData"] = {
            "entryPoints": [
                {"entryPointType": "video", "uri": spec.conference_url, "label": spec.conference_url.split("//")[-1]}
            ],
            "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet"},
            "conferenceId": code,
        }
    if spec.recurring_event_id is not None:
        body["recurringEventId"] = spec.recurring_event_id
    if spec.original_start is not None:
        body["originalStartTime"] = google_time(spec.original_start, spec.time_zone)
    if spec.status is not None:
        body["status"] = spec.status
    if spec.busy is False:
        body["transparency"] = "transparent"  # Google leaves it out for opaque (busy) events
    return body | spec.fields


def graph_body(summary: str | None, spec: EventSpec, event_id: str) -> dict[str, Any]:
    """The Graph fields `spec` sets (start/end are rendered per request)."""
    body: dict[str, Any] = {}
    if summary is not None:
        body["subject"] = summary
    if spec.time_zone is not None:
        body["originalStartTimeZone"] = body["originalEndTimeZone"] = spec.time_zone
    if spec.description is not None:
        body["body"] = {"contentType": "html", "content": f"<html><body><p>{spec.description}</p></body></html>"}
        body["bodyPreview"] = spec.description[:255]
    if spec.location is not None:
        body["location"] = {"displayName": spec.location, "locationType": "default", "uniqueIdType": "unknown"}
    if spec.organizer is not None:
        body["organizer"] = {
            "emailAddress": {"name": spec.organizer[1] or spec.organizer[0], "address": spec.organizer[0]}
        }
    if spec.attendees is not None:
        body["attendees"] = [
            {
                "type": "optional" if a.get("optional") else "required",
                "status": {"response": GRAPH_RESPONSES[a.get("response", "needs_action")], "time": _never()},
                "emailAddress": {"name": a.get("name") or a["email"], "address": a["email"]},
            }
            for a in spec.attendees
        ]
    if spec.conference_url is not None:
        body.update(
            isOnlineMeeting=True,
            onlineMeetingProvider="teamsForBusiness",
            onlineMeeting={"joinUrl": spec.conference_url},
        )
    if spec.recurring_event_id is not None:
        body.update(type="occurrence", seriesMasterId=spec.recurring_event_id)
    if spec.original_start is not None:
        body["originalStart"] = utc(spec.original_start).strftime("%Y-%m-%dT%H:%M:%SZ")
    if spec.status == "cancelled":
        body["isCancelled"] = True
    if spec.status == "tentative":
        body["showAs"] = "tentative"
    elif spec.busy is False:
        body["showAs"] = "free"
    return body | spec.fields


def google_time(value: datetime | date, time_zone: str | None) -> dict[str, str]:
    """Google's `start`/`end`: `date` for all-day, else `dateTime` with its offset (+ `timeZone` when set)."""
    if not isinstance(value, datetime):
        return {"date": value.isoformat()}
    if time_zone is None:
        return {"dateTime": utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return {"dateTime": utc(value).astimezone(zone(time_zone)).isoformat(), "timeZone": time_zone}


def graph_time(value: datetime | date, time_zone: str) -> dict[str, str]:
    """Graph's `dateTimeTimeZone`: local wall time without offset, seven fractional digits, and the zone."""
    if isinstance(value, datetime):
        local = utc(value).astimezone(zone(time_zone)).replace(tzinfo=None)
    else:
        local = datetime(value.year, value.month, value.day)  # all-day: midnight, in whatever zone is named
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0", "timeZone": time_zone}


def parse_time(provider: str, value: Any) -> tuple[datetime | date, str | None]:
    """A `start`/`end` from an edit, in the provider's spelling: the instant (or date) and its zone."""
    if not isinstance(value, dict):
        raise ValueError("start/end must be an object")
    if provider == GOOGLE and "date" in value:
        return date.fromisoformat(value["date"]), None
    raw = datetime.fromisoformat(str(value["dateTime"])[:26])  # Graph's seven digits: Python reads six
    name = value.get("timeZone")
    if raw.tzinfo is None:
        raw = raw.replace(tzinfo=zone(name))
    return raw.astimezone(UTC), name


def apply_edit(provider: str, event: FakeEvent, changes: dict[str, Any]) -> None:
    """Lay provider fields over the event, as a PATCH does; `null` removes a field.

    Graph's `isAllDay: true` next to midnight `start`/`end` makes the event all-day.
    """
    changes = dict(changes)
    all_day = changes.pop("isAllDay", None) if provider != GOOGLE else None
    for key, value in changes.items():
        if key in BOOKKEEPING:
            raise ValueError(f"{key} is set by the provider, not by an edit")
        if key in ("start", "end"):
            when, name = parse_time(provider, value)
            if key == "start":
                event.start, event.time_zone = when, name if isinstance(when, datetime) else event.time_zone
            else:
                event.end = when
        elif value is None:
            event.body.pop(key, None)
        else:
            event.body[key] = value
    if all_day is not None:
        if all_day:
            # All-day times are midnight in no zone in particular: the date part is the day.
            event.start, event.end = (
                date.fromisoformat(str(changes[key]["dateTime"])[:10]) if key in changes else utc(old).date()
                for key, old in (("start", event.start), ("end", event.end))
            )
        else:
            event.start, event.end = utc(event.start), utc(event.end)


def set_response(provider: str, event: FakeEvent, email: str, response: str) -> None:
    """One attendee answers: `response` is a neutral answer (§6.1) or the provider's own word."""
    words = GOOGLE_RESPONSES if provider == GOOGLE else GRAPH_RESPONSES
    word = words.get(response, response)
    if word not in {*words.values(), "notResponded", "organizer"}:
        raise ValueError(f"unknown response {response!r}")
    for attendee in event.body.get("attendees") or []:
        if provider == GOOGLE and attendee.get("email", "").lower() == email.lower():
            attendee["responseStatus"] = word
            return
        address = (attendee.get("emailAddress") or {}).get("address", "")
        if provider != GOOGLE and address.lower() == email.lower():
            attendee["status"] = {"response": word, "time": utc(datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")}
            return
    raise KeyError(email)


def _never() -> str:
    return "0001-01-01T00:00:00Z"


def _drop_none(value: dict[str, Any]) -> dict[str, Any]:
    return {key: item for key, item in value.items() if item is not None}
