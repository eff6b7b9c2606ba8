"""The normalised event (CONTRACT §6.1): its JSON form round-trips, and diffs name only content fields."""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from datetime import UTC, date, datetime
from enum import StrEnum

from sync_trigger.connectors.normalized import (
    DESCRIPTION_MAX_BYTES,
    Attendee,
    AttendeeResponse,
    EventTime,
    NormalizedEvent,
    Person,
    changed_fields,
    cut_description,
)
from synchook.timeutil import isoformat

EVENT = NormalizedEvent(
    "evt-1",
    ical_uid="evt-1@google.com",
    title="Standup",
    start=EventTime(datetime(2026, 12, 4, 8, tzinfo=UTC), None, "Europe/Zurich"),
    end=EventTime(datetime(2026, 12, 4, 8, 15, tzinfo=UTC), None, "Europe/Zurich"),
    organizer=Person("alice@example.com", "Alice"),
    attendees=(Attendee("bob@example.com", "Bob", AttendeeResponse.ACCEPTED),),
    updated_at=datetime(2026, 12, 1, tzinfo=UTC),
)


def test_json_round_trips_and_uses_the_contract_time_format() -> None:
    stored = EVENT.as_json()
    assert stored["start"] == {"date_time": "2026-12-04T08:00:00.000Z", "date": None, "time_zone": "Europe/Zurich"}
    assert stored["attendees"] == [
        {"email": "bob@example.com", "name": "Bob", "response": "accepted", "optional": False}
    ]
    assert NormalizedEvent.from_json(stored) == EVENT


def test_all_day_dates_round_trip() -> None:
    all_day = NormalizedEvent("d", start=EventTime(date=date(2026, 12, 24)), all_day=True)
    assert all_day.as_json()["start"] == {"date_time": None, "date": "2026-12-24", "time_zone": None}
    assert NormalizedEvent.from_json(all_day.as_json()) == all_day


def test_changed_fields_names_what_differs_but_not_a_bare_updated_at() -> None:
    old = EVENT.as_json()
    assert changed_fields(old, {**old, "updated_at": "2026-12-02T00:00:00.000Z"}) == []
    new = {**old, "title": "Standup (moved)", "attendees": [], "updated_at": "2026-12-02T00:00:00.000Z"}
    assert changed_fields(old, new) == ["title", "attendees"]


def test_descriptions_are_cut_to_8_kib_on_a_character_boundary() -> None:
    assert cut_description("short") == "short"
    cut = cut_description("é" * DESCRIPTION_MAX_BYTES)
    assert cut is not None and len(cut.encode()) <= DESCRIPTION_MAX_BYTES and set(cut) == {"é"}


def test_json_form_is_every_field_in_declaration_order_as_asdict_gives_it() -> None:
    # as_json is spelled out for speed: it must stay the field-by-field JSON of the dataclass.
    def jsonable(value: object) -> object:
        if isinstance(value, dict):
            return {k: jsonable(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [jsonable(v) for v in value]
        if isinstance(value, datetime):
            return isoformat(value)
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, StrEnum):
            return value.value
        return value

    rich = replace(
        EVENT,
        description="d",
        location="l",
        original_start=EventTime(None, date(2026, 12, 4), None),
        recurring_event_id="s",
        conference_url="https://meet.example.com/x",
        html_link="https://example.com/e",
    )
    for event in (EVENT, rich, NormalizedEvent("bare")):
        stored = event.as_json()
        assert stored == jsonable(asdict(event))
        assert list(stored) == [f.name for f in fields(NormalizedEvent)]
