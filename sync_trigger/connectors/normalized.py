"""The normalised calendar event of CONTRACT §6.1: one shape for Google, Graph and CalDAV items.

Connectors build it from each provider's fields (PROVIDERS.md §5); the calendar index stores it and
compares it field by field to tell created / updated / deleted apart. Ids Synchook assigns (`id`,
`calendar_id`, `connection_id`) and `provider` are not part of it: the index adds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from synchook.timeutil import isoformat, parse_datetime

# §6.1: `description` is cut to 8 KiB (of UTF-8), so one long agenda cannot bloat every change event.
DESCRIPTION_MAX_BYTES = 8 * 1024

# Fields whose change alone is not a change of content: a provider bumps `updated_at` on no-op saves.
NOT_CONTENT = frozenset({"updated_at"})


class EventStatus(StrEnum):
    CONFIRMED = "confirmed"
    TENTATIVE = "tentative"
    CANCELLED = "cancelled"


class AttendeeResponse(StrEnum):
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TENTATIVE = "tentative"
    NEEDS_ACTION = "needs_action"


@dataclass(frozen=True, slots=True)
class EventTime:
    """A start or end: `date_time` (UTC) for timed events, `date` for all-day ones; the provider's zone."""

    date_time: datetime | None = None
    date: date | None = None
    time_zone: str | None = None


@dataclass(frozen=True, slots=True)
class Person:
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Attendee:
    email: str | None = None
    name: str | None = None
    response: AttendeeResponse = AttendeeResponse.NEEDS_ACTION
    optional: bool = False


@dataclass(frozen=True, slots=True)
class NormalizedEvent:
    provider_event_id: str
    ical_uid: str | None = None
    title: str | None = None
    description: str | None = None
    location: str | None = None
    start: EventTime | None = None
    end: EventTime | None = None
    all_day: bool = False
    status: EventStatus = EventStatus.CONFIRMED
    busy: bool = True
    organizer: Person | None = None
    attendees: tuple[Attendee, ...] = ()
    recurring_event_id: str | None = None
    original_start: EventTime | None = None
    conference_url: str | None = None
    html_link: str | None = None
    updated_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The §6.1 fields as JSON values (times as the contract's UTC strings), for storage and the wire.

        Spelled out rather than `dataclasses.asdict`: that deep-copies every value and was most of the cost of
        indexing a 10,000-event first import.
        """
        return {
            "provider_event_id": self.provider_event_id,
            "ical_uid": self.ical_uid,
            "title": self.title,
            "description": self.description,
            "location": self.location,
            "start": _time_json(self.start),
            "end": _time_json(self.end),
            "all_day": self.all_day,
            "status": self.status.value,
            "busy": self.busy,
            "organizer": None
            if self.organizer is None
            else {"email": self.organizer.email, "name": self.organizer.name},
            "attendees": [
                {"email": a.email, "name": a.name, "response": a.response.value, "optional": a.optional}
                for a in self.attendees
            ],
            "recurring_event_id": self.recurring_event_id,
            "original_start": _time_json(self.original_start),
            "conference_url": self.conference_url,
            "html_link": self.html_link,
            "updated_at": isoformat(self.updated_at) if self.updated_at is not None else None,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> NormalizedEvent:
        """The inverse of `as_json` (what the index stored)."""
        return cls(
            provider_event_id=value["provider_event_id"],
            ical_uid=value.get("ical_uid"),
            title=value.get("title"),
            description=value.get("description"),
            location=value.get("location"),
            start=_time_from_json(value.get("start")),
            end=_time_from_json(value.get("end")),
            all_day=bool(value.get("all_day", False)),
            status=EventStatus(value.get("status", EventStatus.CONFIRMED)),
            busy=bool(value.get("busy", True)),
            organizer=Person(**value["organizer"]) if value.get("organizer") else None,
            attendees=tuple(
                Attendee(a.get("email"), a.get("name"), AttendeeResponse(a["response"]), bool(a.get("optional")))
                for a in value.get("attendees") or ()
            ),
            recurring_event_id=value.get("recurring_event_id"),
            original_start=_time_from_json(value.get("original_start")),
            conference_url=value.get("conference_url"),
            html_link=value.get("html_link"),
            updated_at=parse_datetime(value["updated_at"]) if value.get("updated_at") else None,
        )


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Top-level §6.1 fields whose JSON values differ, in field order; `updated_at` alone is no change."""
    return [name for name in new if name not in NOT_CONTENT and old.get(name) != new.get(name)]


def cut_description(text: str | None) -> str | None:
    if text is None:
        return None
    encoded = text.encode("utf-8")
    if len(encoded) <= DESCRIPTION_MAX_BYTES:
        return text
    return encoded[:DESCRIPTION_MAX_BYTES].decode("utf-8", errors="ignore")


def _time_json(value: EventTime | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {
        "date_time": isoformat(value.date_time) if value.date_time is not None else None,
        "date": value.date.isoformat() if value.date is not None else None,
        "time_zone": value.time_zone,
    }


def _time_from_json(value: dict[str, Any] | None) -> EventTime | None:
    if not value:
        return None
    return EventTime(
        date_time=parse_datetime(value["date_time"]) if value.get("date_time") else None,
        date=date.fromisoformat(value["date"]) if value.get("date") else None,
        time_zone=value.get("time_zone"),
    )
