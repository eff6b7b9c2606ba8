"""iCalendar (RFC 5545) members of a CalDAV calendar to normalised events (PROVIDERS.md §5, CalDAV column).

One member (one `.ics` resource) holds one VCALENDAR: a single VEVENT, or a recurring series (the
master with `RRULE` plus overridden instances with `RECURRENCE-ID`). `instances` expands it into
the events inside a window with `recurring-ical-events` (EXDATEs dropped, overrides applied);
parsing is `icalendar`'s, never by hand. Odd data never raises: an unreadable member yields nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import icalendar
import recurring_ical_events

from sync_trigger.connectors.normalized import (
    Attendee,
    AttendeeResponse,
    EventStatus,
    EventTime,
    NormalizedEvent,
    Person,
    cut_description,
)

__all__ = ["Instance", "instances"]

logger = logging.getLogger(__name__)

_RESPONSES = {
    "ACCEPTED": AttendeeResponse.ACCEPTED,
    "DECLINED": AttendeeResponse.DECLINED,
    "TENTATIVE": AttendeeResponse.TENTATIVE,
    "NEEDS-ACTION": AttendeeResponse.NEEDS_ACTION,
}
_STATUSES = {"CONFIRMED": EventStatus.CONFIRMED, "TENTATIVE": EventStatus.TENTATIVE, "CANCELLED": EventStatus.CANCELLED}


@dataclass(frozen=True, slots=True)
class Instance:
    """One event (or one occurrence of a series) inside the window, as the index keys and stores it."""

    event_id: str
    event: NormalizedEvent
    start: datetime | None
    end: datetime | None


def instances(ics: str, window: tuple[datetime, datetime]) -> list[Instance]:
    """Every VEVENT occurrence of one member that overlaps `window`; [] for a member that cannot be read."""
    try:
        calendar = icalendar.Calendar.from_ical(ics)
        occurrences = recurring_ical_events.of(calendar, components=["VEVENT"]).between(*window)
    except Exception as exc:  # a malformed member must not stop the round
        logger.warning("caldav: unreadable calendar member skipped (%s)", type(exc).__name__)
        return []
    result: list[Instance] = []
    recurring_uids = {
        str(component.get("UID"))
        for component in calendar.walk("VEVENT")
        if component.get("RRULE") is not None or component.get("RECURRENCE-ID") is not None
    }
    for component in occurrences:
        uid = component.get("UID")
        if uid is None:
            continue
        event = to_normalized(component, recurring=str(uid) in recurring_uids)
        start = _utc_instant(component.get("DTSTART"))
        end = _utc_instant(component.get("DTEND")) or _end_from_duration(component, start)
        result.append(Instance(event.provider_event_id, event, start, end))
    return result


def to_normalized(component: Any, *, recurring: bool) -> NormalizedEvent:
    """One VEVENT (an occurrence from the expansion, or a plain event) as the §6.1 event."""
    uid = str(component.get("UID"))
    recurrence_id = component.get("RECURRENCE-ID")
    # The expansion stamps every occurrence of a series with its RECURRENCE-ID; a plain event has none.
    original = _event_time(recurrence_id) if recurring and recurrence_id is not None else None
    start = _event_time(component.get("DTSTART"))
    end = _event_time(component.get("DTEND")) or _duration_end(component, start)
    all_day = start is not None and start.date is not None
    return NormalizedEvent(
        provider_event_id=f"{uid}/{_id_part(recurrence_id)}" if original is not None else uid,
        ical_uid=uid,
        title=_text(component.get("SUMMARY")),
        description=cut_description(_text(component.get("DESCRIPTION"))),
        location=_text(component.get("LOCATION")),
        start=start,
        end=end,
        all_day=all_day,
        status=_STATUSES.get((_text(component.get("STATUS")) or "").upper(), EventStatus.CONFIRMED),
        busy=(_text(component.get("TRANSP")) or "").upper() != "TRANSPARENT",
        organizer=_organizer(component.get("ORGANIZER")),
        attendees=tuple(_attendee(a) for a in _as_list(component.get("ATTENDEE"))),
        recurring_event_id=uid if recurring else None,
        original_start=original,
        conference_url=_conference(component),
        html_link=None,  # iCalendar has no link to a web view of the event
        updated_at=_utc_instant(component.get("LAST-MODIFIED")) or _utc_instant(component.get("DTSTAMP")),
    )


def _id_part(recurrence_id: Any) -> str:
    # Stable whatever zone the override was written in: the instant in UTC, or the date for all-day series.
    value = recurrence_id.dt
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return value.strftime("%Y%m%d")


def _event_time(prop: Any) -> EventTime | None:
    if prop is None or not hasattr(prop, "dt"):
        return None
    value = prop.dt
    zone = _zone_name(prop)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            # Floating time (no TZID, no Z): read as UTC, the one reading every receiver agrees on.
            return EventTime(date_time=value.replace(tzinfo=UTC), time_zone=zone)
        return EventTime(date_time=value.astimezone(UTC), time_zone=zone or _tz_key(value))
    if isinstance(value, date):
        return EventTime(date=value, time_zone=zone)
    return None


def _duration_end(component: Any, start: EventTime | None) -> EventTime | None:
    duration = component.get("DURATION")
    if start is None or duration is None or not isinstance(getattr(duration, "dt", None), timedelta):
        return None
    if start.date_time is not None:
        return EventTime(date_time=start.date_time + duration.dt, time_zone=start.time_zone)
    if start.date is not None:
        return EventTime(date=start.date + duration.dt, time_zone=start.time_zone)
    return None


def _end_from_duration(component: Any, start: datetime | None) -> datetime | None:
    duration = component.get("DURATION")
    if start is None or duration is None or not isinstance(getattr(duration, "dt", None), timedelta):
        return None
    return start + duration.dt


def _utc_instant(prop: Any) -> datetime | None:
    """The property as an aware UTC datetime; a date is its 00:00 UTC (EventChange's all-day convention)."""
    if prop is None or not hasattr(prop, "dt"):
        return None
    value = prop.dt
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return None


def _zone_name(prop: Any) -> str | None:
    params = getattr(prop, "params", None)
    tzid = params.get("TZID") if params is not None else None
    return str(tzid) if tzid else None


def _tz_key(value: datetime) -> str | None:
    key = getattr(value.tzinfo, "key", None) or getattr(value.tzinfo, "zone", None)
    if isinstance(key, str) and key != "UTC":
        return key
    return None


def _address(prop: Any) -> tuple[str | None, str | None]:
    text = str(prop).strip()
    email = text[7:] if text.lower().startswith("mailto:") else None
    params = getattr(prop, "params", None)
    name = params.get("CN") if params is not None else None
    return (email or None), (str(name) if name else None)


def _organizer(prop: Any) -> Person | None:
    if prop is None:
        return None
    email, name = _address(prop)
    if email is None and name is None:
        return None
    return Person(email=email, name=name)


def _attendee(prop: Any) -> Attendee:
    email, name = _address(prop)
    params = getattr(prop, "params", None) or {}
    partstat = str(params.get("PARTSTAT", "NEEDS-ACTION")).upper()
    role = str(params.get("ROLE", "REQ-PARTICIPANT")).upper()
    return Attendee(
        email=email,
        name=name,
        response=_RESPONSES.get(partstat, AttendeeResponse.NEEDS_ACTION),
        optional=role == "OPT-PARTICIPANT",
    )


def _conference(component: Any) -> str | None:
    for name in ("URL", "CONFERENCE", "X-GOOGLE-CONFERENCE"):
        for prop in _as_list(component.get(name)):
            text = _text(prop)
            if text:
                return text
    return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text or None
