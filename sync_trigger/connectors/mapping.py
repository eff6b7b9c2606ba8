"""Provider events to the normalised event of CONTRACT §6.1, field by field as PROVIDERS.md §5 lays out.

`from_google` reads a Google Calendar v3 event, `from_graph` a Microsoft Graph event. Both take the
item as the provider sent it and never raise on odd data: a field of the wrong type counts as absent
(null, or `[]` for attendees), so one malformed event cannot stop a sync round.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from sync_trigger.connectors._time import parse_timestamp, parse_zoned
from sync_trigger.connectors.normalized import (
    Attendee,
    AttendeeResponse,
    EventStatus,
    EventTime,
    NormalizedEvent,
    Person,
    cut_description,
)

__all__ = ["from_google", "from_graph"]

_GOOGLE_RESPONSES = {
    "accepted": AttendeeResponse.ACCEPTED,
    "declined": AttendeeResponse.DECLINED,
    "tentative": AttendeeResponse.TENTATIVE,
    "needsAction": AttendeeResponse.NEEDS_ACTION,
}
_GRAPH_RESPONSES = {
    "accepted": AttendeeResponse.ACCEPTED,
    "declined": AttendeeResponse.DECLINED,
    "tentativelyAccepted": AttendeeResponse.TENTATIVE,
    "none": AttendeeResponse.NEEDS_ACTION,
    "notResponded": AttendeeResponse.NEEDS_ACTION,
    # The organizer's own entry: whoever set up the meeting attends it.
    "organizer": AttendeeResponse.ACCEPTED,
}
_GRAPH_NOT_BUSY = frozenset({"free", "workingElsewhere"})


# ---- Google Calendar v3 ------------------------------------------------------------------------


def from_google(item: Mapping[str, Any]) -> NormalizedEvent:
    start, end = _dict(item.get("start")), _dict(item.get("end"))
    return NormalizedEvent(
        provider_event_id=str(item["id"]),
        ical_uid=_text(item.get("iCalUID")),
        title=_text(item.get("summary")),
        description=cut_description(_text(item.get("description"))),
        location=_text(item.get("location")),
        start=_google_time(start),
        end=_google_time(end),  # an all-day end.date is exclusive: kept as given, as in iCalendar
        all_day="date" in start and "dateTime" not in start,
        status=_google_status(item.get("status")),
        busy=item.get("transparency") != "transparent",
        organizer=_person(_dict(item.get("organizer")), "email", "displayName"),
        attendees=tuple(_google_attendee(a) for a in _list(item.get("attendees")) if isinstance(a, dict)),
        recurring_event_id=_text(item.get("recurringEventId")),
        original_start=_google_time(_dict(item.get("originalStartTime"))),
        conference_url=_text(item.get("hangoutLink")) or _google_video(_dict(item.get("conferenceData"))),
        html_link=_text(item.get("htmlLink")),
        updated_at=parse_timestamp(item.get("updated")),
    )


def _google_time(value: dict[str, Any]) -> EventTime | None:
    zone = _text(value.get("timeZone"))
    if "dateTime" in value:
        return EventTime(date_time=parse_timestamp(value["dateTime"]), time_zone=zone)
    if "date" in value:
        return EventTime(date=_date(value["date"]), time_zone=zone)
    return None


def _google_status(value: Any) -> EventStatus:
    try:
        return EventStatus(value)
    except ValueError:
        return EventStatus.CONFIRMED


def _google_attendee(value: dict[str, Any]) -> Attendee:
    return Attendee(
        email=_text(value.get("email")),
        name=_text(value.get("displayName")),
        response=_GOOGLE_RESPONSES.get(str(value.get("responseStatus")), AttendeeResponse.NEEDS_ACTION),
        optional=value.get("optional") is True,
    )


def _google_video(conference: dict[str, Any]) -> str | None:
    # Google names the kind `entryPointType`; PROVIDERS.md §5 writes `type`: accept both.
    for entry in _list(conference.get("entryPoints")):
        if isinstance(entry, dict) and "video" in (entry.get("entryPointType"), entry.get("type")):
            return _text(entry.get("uri"))
    return None


# ---- Microsoft Graph ---------------------------------------------------------------------------


def from_graph(item: Mapping[str, Any]) -> NormalizedEvent:
    all_day = item.get("isAllDay") is True
    show_as = item.get("showAs")
    return NormalizedEvent(
        provider_event_id=str(item["id"]),
        ical_uid=_text(item.get("iCalUId")),
        title=_text(item.get("subject")),
        description=cut_description(_text(_dict(item.get("body")).get("content")) or _text(item.get("bodyPreview"))),
        location=_text(_dict(item.get("location")).get("displayName")),
        start=_graph_time(_dict(item.get("start")), all_day, item.get("originalStartTimeZone")),
        end=_graph_time(_dict(item.get("end")), all_day, item.get("originalEndTimeZone")),
        all_day=all_day,
        status=(
            EventStatus.CANCELLED
            if item.get("isCancelled") is True
            else EventStatus.TENTATIVE
            if show_as == "tentative"
            else EventStatus.CONFIRMED
        ),
        busy=show_as not in _GRAPH_NOT_BUSY,
        organizer=_person(_dict(_dict(item.get("organizer")).get("emailAddress")), "address", "name"),
        attendees=tuple(_graph_attendee(a) for a in _list(item.get("attendees")) if isinstance(a, dict)),
        recurring_event_id=_text(item.get("seriesMasterId")),
        original_start=_graph_original_start(item.get("originalStart"), item.get("originalStartTimeZone")),
        conference_url=_text(_dict(item.get("onlineMeeting")).get("joinUrl")),
        html_link=_text(item.get("webLink")),
        updated_at=parse_timestamp(item.get("lastModifiedDateTime")),
    )


def _graph_time(value: dict[str, Any], all_day: bool, original_zone: Any) -> EventTime | None:
    """A `dateTimeTimeZone`: local time without offset in `timeZone` (IANA or Windows), converted to UTC.

    The zone reported is the one the event was written in (`originalStartTimeZone` /
    `originalEndTimeZone`): `timeZone` is only the zone we asked Graph to write times in (UTC).
    """
    raw = _text(value.get("dateTime"))
    if raw is None:
        return None
    zone = _text(original_zone) or _text(value.get("timeZone"))
    if all_day:
        # All-day events run midnight to midnight of their dates, in no zone in particular.
        return EventTime(date=_date(raw), time_zone=zone)
    return EventTime(date_time=parse_zoned(raw, value.get("timeZone")), time_zone=zone)


def _graph_original_start(value: Any, zone: Any) -> EventTime | None:
    # `originalStart` is an Edm.DateTimeOffset ("2024-05-06T08:00:00Z"), unlike start/end.
    when = parse_timestamp(value)
    return EventTime(date_time=when, time_zone=_text(zone)) if when else None


def _graph_attendee(value: dict[str, Any]) -> Attendee:
    address = _dict(value.get("emailAddress"))
    return Attendee(
        email=_text(address.get("address")),
        name=_text(address.get("name")),
        response=_GRAPH_RESPONSES.get(str(_dict(value.get("status")).get("response")), AttendeeResponse.NEEDS_ACTION),
        optional=value.get("type") == "optional",
    )


# ---- helpers -----------------------------------------------------------------------------------


def _person(value: dict[str, Any], email_key: str, name_key: str) -> Person | None:
    email, name = _text(value.get(email_key)), _text(value.get(name_key))
    return Person(email=email, name=name) if email or name else None


def _text(value: Any) -> str | None:
    # Graph sends "" where nothing was set (location, body): that is "not given", i.e. null.
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None
