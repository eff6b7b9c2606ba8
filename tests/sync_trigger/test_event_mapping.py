"""Provider events to the normalised event (CONTRACT §6.1), one test per PROVIDERS.md §5 row, both providers.

Payloads are shaped as Google Calendar v3 and Microsoft Graph v1.0 send them (documented examples).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from sync_trigger.connectors._time import parse_zoned
from sync_trigger.connectors.mapping import from_google, from_graph
from sync_trigger.connectors.normalized import (
    DESCRIPTION_MAX_BYTES,
    Attendee,
    AttendeeResponse,
    EventStatus,
    EventTime,
    NormalizedEvent,
    Person,
)


def google_event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "calendar#event",
        "etag": '"3181161784712000"',
        "id": "4eahs9ghkhrvkld72hogu9ph3e",
        "status": "confirmed",
        "htmlLink": "https://www.google.com/calendar/event?eid=NGVhaHM5Z2hraHJ2a2xkNzJob2d1OXBoM2Ugam9obkBleGFtcGxl",
        "created": "2024-04-30T08:00:00.000Z",
        "updated": "2024-05-01T09:00:00.123Z",
        "summary": "Standup",
        "creator": {"email": "alice@example.com", "self": True},
        "organizer": {"email": "alice@example.com", "displayName": "Alice", "self": True},
        "start": {"dateTime": "2024-05-02T11:00:00+02:00", "timeZone": "Europe/Zurich"},
        "end": {"dateTime": "2024-05-02T11:15:00+02:00", "timeZone": "Europe/Zurich"},
        "iCalUID": "4eahs9ghkhrvkld72hogu9ph3e@google.com",
        "sequence": 0,
        "reminders": {"useDefault": True},
        "eventType": "default",
    }
    return base | fields


def graph_event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.event",
        "@odata.etag": 'W/"ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw=="',
        "id": "AAMkAGIAAAoZDOFAAA=",
        "createdDateTime": "2024-04-30T08:00:00.0000000Z",
        "lastModifiedDateTime": "2024-05-01T09:00:00.1234567Z",
        "iCalUId": "040000008200E00074C5B7101A82E00800000000D3D70B8A7B41DA01000000000000000010000000",
        "subject": "Plan shopping list",
        "bodyPreview": "",
        "importance": "normal",
        "isAllDay": False,
        "isCancelled": False,
        "isOrganizer": True,
        "showAs": "busy",
        "type": "singleInstance",
        "webLink": "https://outlook.office365.com/owa/?itemid=AAMkAGIAAAoZDOFAAA%3D&exvsurl=1&path=/calendar/item",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": False,
        "onlineMeetingProvider": "unknown",
        "originalStartTimeZone": "UTC",
        "originalEndTimeZone": "UTC",
        "seriesMasterId": None,
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "body": {"contentType": "html", "content": ""},
        "start": {"dateTime": "2016-12-09T20:30:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2016-12-09T22:00:00.0000000", "timeZone": "UTC"},
        "location": {"displayName": "", "locationType": "default", "uniqueIdType": "unknown", "address": {}},
        "locations": [],
        "attendees": [],
        "organizer": {"emailAddress": {"name": "Samantha Booth", "address": "samanthab@contoso.com"}},
        "onlineMeeting": None,
    }
    return base | fields


# ---- identity, text ----------------------------------------------------------------------------


def test_ids_title_links_and_updated() -> None:
    g = from_google(google_event())
    assert (g.provider_event_id, g.ical_uid, g.title) == (
        "4eahs9ghkhrvkld72hogu9ph3e",
        "4eahs9ghkhrvkld72hogu9ph3e@google.com",
        "Standup",
    )
    assert g.html_link and g.html_link.startswith("https://www.google.com/calendar/event?eid=")
    assert g.updated_at == datetime(2024, 5, 1, 9, 0, 0, 123000, tzinfo=UTC)
    m = from_graph(graph_event())
    assert (m.provider_event_id, m.title) == ("AAMkAGIAAAoZDOFAAA=", "Plan shopping list")
    assert m.ical_uid == graph_event()["iCalUId"]
    assert m.html_link == graph_event()["webLink"]
    assert m.updated_at == datetime(2024, 5, 1, 9, 0, 0, 123456, tzinfo=UTC)


def test_description_google_as_given_graph_body_html_else_preview_cut_to_8_kib() -> None:
    assert from_google(google_event(description="<b>Agenda</b>\nitem")).description == "<b>Agenda</b>\nitem"
    assert from_google(google_event()).description is None
    html = "<html><body><p>Agenda</p></body></html>"
    body = {"contentType": "html", "content": html}
    assert from_graph(graph_event(body=body, bodyPreview="Agenda")).description == html
    assert from_graph(graph_event(bodyPreview="Agenda")).description == "Agenda"  # empty body content
    assert from_graph(graph_event()).description is None  # "" and "": not given
    long = "é" * DESCRIPTION_MAX_BYTES
    assert len(from_google(google_event(description=long)).description.encode()) <= DESCRIPTION_MAX_BYTES  # type: ignore[union-attr]


def test_location() -> None:
    assert from_google(google_event(location="Room 4.01, Zurich")).location == "Room 4.01, Zurich"
    assert from_google(google_event()).location is None
    located = {"displayName": "Conf Room 3", "locationType": "default", "uniqueIdType": "unknown"}
    assert from_graph(graph_event(location=located)).location == "Conf Room 3"
    assert from_graph(graph_event()).location is None


# ---- times ---------------------------------------------------------------------------------------


def test_google_timed_event_in_utc_with_its_zone() -> None:
    event = from_google(google_event())
    assert event.start == EventTime(date_time=datetime(2024, 5, 2, 9, tzinfo=UTC), time_zone="Europe/Zurich")
    assert event.end == EventTime(date_time=datetime(2024, 5, 2, 9, 15, tzinfo=UTC), time_zone="Europe/Zurich")
    assert event.all_day is False
    plain = from_google(google_event(start={"dateTime": "2024-05-02T09:00:00Z"}))
    assert plain.start == EventTime(date_time=datetime(2024, 5, 2, 9, tzinfo=UTC))


def test_google_all_day_keeps_dates_and_the_exclusive_end() -> None:
    event = from_google(google_event(start={"date": "2024-12-31"}, end={"date": "2025-01-01"}))
    assert event.all_day is True
    assert event.start == EventTime(date=date(2024, 12, 31)) and event.end == EventTime(date=date(2025, 1, 1))
    assert event.as_json()["start"] == {"date_time": None, "date": "2024-12-31", "time_zone": None}


def test_graph_local_time_without_offset_converted_from_its_zone() -> None:
    zoned = from_graph(
        graph_event(
            start={"dateTime": "2024-05-02T11:00:00.0000000", "timeZone": "Europe/Zurich"},
            end={"dateTime": "2024-05-02T11:15:00.0000000", "timeZone": "Europe/Zurich"},
            originalStartTimeZone="Europe/Zurich",
            originalEndTimeZone="Europe/Zurich",
        )
    )
    assert zoned.start == EventTime(date_time=datetime(2024, 5, 2, 9, tzinfo=UTC), time_zone="Europe/Zurich")
    assert zoned.end == EventTime(date_time=datetime(2024, 5, 2, 9, 15, tzinfo=UTC), time_zone="Europe/Zurich")
    # Asked for UTC (Prefer: outlook.timezone): converted as UTC, the zone is the one it was written in.
    asked_utc = from_graph(
        graph_event(
            start={"dateTime": "2024-05-02T09:00:00.0000000", "timeZone": "UTC"},
            originalStartTimeZone="W. Europe Standard Time",
        )
    )
    assert asked_utc.start == EventTime(
        date_time=datetime(2024, 5, 2, 9, tzinfo=UTC), time_zone="W. Europe Standard Time"
    )


def test_graph_windows_zone_names_map_or_fall_back_to_utc_keeping_the_name() -> None:
    pacific = from_graph(
        graph_event(
            start={"dateTime": "2024-01-15T10:00:00.0000000", "timeZone": "Pacific Standard Time"},
            originalStartTimeZone=None,
        )
    )
    assert pacific.start == EventTime(
        date_time=datetime(2024, 1, 15, 18, tzinfo=UTC), time_zone="Pacific Standard Time"
    )
    odd = from_graph(
        graph_event(
            start={"dateTime": "2024-01-15T10:00:00.0000000", "timeZone": "Customized Time Zone"},
            originalStartTimeZone=None,
        )
    )
    assert odd.start == EventTime(date_time=datetime(2024, 1, 15, 10, tzinfo=UTC), time_zone="Customized Time Zone")


@pytest.mark.parametrize(
    ("zone", "utc_hour"),
    [("W. Europe Standard Time", 7), ("Eastern Standard Time", 13), ("Tokyo Standard Time", 0), ("UTC", 9)],
)
def test_common_windows_zone_names_convert(zone: str, utc_hour: int) -> None:
    # 2024-07-01 09:00 local, summer time where it applies.
    converted = parse_zoned("2024-07-01T09:00:00.0000000", zone)
    assert converted is not None and converted.hour == utc_hour


def test_graph_all_day_has_dates_and_no_date_time() -> None:
    event = from_graph(
        graph_event(
            isAllDay=True,
            start={"dateTime": "2024-12-31T00:00:00.0000000", "timeZone": "UTC"},
            end={"dateTime": "2025-01-01T00:00:00.0000000", "timeZone": "UTC"},
        )
    )
    assert event.all_day is True
    assert event.start == EventTime(date=date(2024, 12, 31), time_zone="UTC")
    assert event.end == EventTime(date=date(2025, 1, 1), time_zone="UTC")


# ---- status, busy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [("confirmed", EventStatus.CONFIRMED), ("tentative", EventStatus.TENTATIVE), ("cancelled", EventStatus.CANCELLED)],
)
def test_google_status(status: str, expected: EventStatus) -> None:
    assert from_google(google_event(status=status)).status == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"isCancelled": True, "showAs": "busy"}, EventStatus.CANCELLED),
        ({"isCancelled": True, "showAs": "tentative"}, EventStatus.CANCELLED),
        ({"showAs": "tentative"}, EventStatus.TENTATIVE),
        ({"showAs": "busy"}, EventStatus.CONFIRMED),
        ({"showAs": "free"}, EventStatus.CONFIRMED),
    ],
)
def test_graph_status(fields: dict[str, Any], expected: EventStatus) -> None:
    assert from_graph(graph_event(**fields)).status == expected


def test_google_busy_unless_transparent() -> None:
    assert from_google(google_event()).busy is True  # Google leaves out transparency for opaque events
    assert from_google(google_event(transparency="opaque")).busy is True
    assert from_google(google_event(transparency="transparent")).busy is False


@pytest.mark.parametrize(
    ("show_as", "busy"),
    [
        ("busy", True),
        ("tentative", True),
        ("oof", True),
        ("unknown", True),
        ("free", False),
        ("workingElsewhere", False),
    ],
)
def test_graph_busy_unless_free_or_working_elsewhere(show_as: str, busy: bool) -> None:
    assert from_graph(graph_event(showAs=show_as)).busy is busy


# ---- people ------------------------------------------------------------------------------------


def test_organizer() -> None:
    assert from_google(google_event()).organizer == Person("alice@example.com", "Alice")
    assert from_google(google_event(organizer={"email": "x@group.calendar.google.com"})).organizer == Person(
        "x@group.calendar.google.com", None
    )
    assert from_graph(graph_event()).organizer == Person("samanthab@contoso.com", "Samantha Booth")
    assert from_google({"id": "e1"}).organizer is None and from_graph({"id": "e1"}).organizer is None


def test_google_attendees_responses_and_optional() -> None:
    attendees = [
        {"email": "alice@example.com", "organizer": True, "self": True, "responseStatus": "accepted"},
        {"email": "bob@example.com", "displayName": "Bob", "responseStatus": "declined"},
        {"email": "carol@example.com", "displayName": "Carol", "optional": True, "responseStatus": "tentative"},
        {"email": "dave@example.com", "responseStatus": "needsAction"},
    ]
    assert from_google(google_event(attendees=attendees)).attendees == (
        Attendee("alice@example.com", None, AttendeeResponse.ACCEPTED, False),
        Attendee("bob@example.com", "Bob", AttendeeResponse.DECLINED, False),
        Attendee("carol@example.com", "Carol", AttendeeResponse.TENTATIVE, True),
        Attendee("dave@example.com", None, AttendeeResponse.NEEDS_ACTION, False),
    )
    assert from_google(google_event()).attendees == ()


def test_graph_attendees_responses_and_optional() -> None:
    def attendee(kind: str, response: str, name: str, address: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": {"response": response, "time": "0001-01-01T00:00:00Z"},
            "emailAddress": {"name": name, "address": address},
        }

    attendees = [
        attendee("required", "accepted", "Bob", "bob@contoso.com"),
        attendee("required", "declined", "Dana", "dana@contoso.com"),
        attendee("optional", "tentativelyAccepted", "Carol", "carol@contoso.com"),
        attendee("required", "none", "Erin", "erin@contoso.com"),
        attendee("resource", "notResponded", "Room 3", "room3@contoso.com"),
    ]
    assert from_graph(graph_event(attendees=attendees)).attendees == (
        Attendee("bob@contoso.com", "Bob", AttendeeResponse.ACCEPTED, False),
        Attendee("dana@contoso.com", "Dana", AttendeeResponse.DECLINED, False),
        Attendee("carol@contoso.com", "Carol", AttendeeResponse.TENTATIVE, True),
        Attendee("erin@contoso.com", "Erin", AttendeeResponse.NEEDS_ACTION, False),
        Attendee("room3@contoso.com", "Room 3", AttendeeResponse.NEEDS_ACTION, False),
    )
    assert from_graph(graph_event()).attendees == ()


# ---- recurrence, conference --------------------------------------------------------------------


def test_google_recurring_instance() -> None:
    instance = from_google(
        google_event(
            id="4eahs9ghkhrvkld72hogu9ph3e_20240506T090000Z",
            recurringEventId="4eahs9ghkhrvkld72hogu9ph3e",
            originalStartTime={"dateTime": "2024-05-06T11:00:00+02:00", "timeZone": "Europe/Zurich"},
        )
    )
    assert instance.recurring_event_id == "4eahs9ghkhrvkld72hogu9ph3e"
    assert instance.original_start == EventTime(
        date_time=datetime(2024, 5, 6, 9, tzinfo=UTC), time_zone="Europe/Zurich"
    )
    all_day = from_google(google_event(recurringEventId="s1", originalStartTime={"date": "2024-05-06"}))
    assert all_day.original_start == EventTime(date=date(2024, 5, 6))
    single = from_google(google_event())
    assert (single.recurring_event_id, single.original_start) == (None, None)


def test_graph_occurrence() -> None:
    occurrence = from_graph(
        graph_event(
            type="occurrence",
            seriesMasterId="AAMkAGIAAAoZDOFAAB=",
            originalStart="2024-05-06T09:00:00Z",
            originalStartTimeZone="W. Europe Standard Time",
        )
    )
    assert occurrence.recurring_event_id == "AAMkAGIAAAoZDOFAAB="
    assert occurrence.original_start == EventTime(
        date_time=datetime(2024, 5, 6, 9, tzinfo=UTC), time_zone="W. Europe Standard Time"
    )
    single = from_graph(graph_event())
    assert (single.recurring_event_id, single.original_start) == (None, None)


def test_google_conference_from_hangout_link_or_video_entry_point() -> None:
    meet = "https://meet.google.com/abc-defg-hij"
    assert from_google(google_event(hangoutLink=meet)).conference_url == meet
    zoom = {
        "entryPoints": [
            {"entryPointType": "phone", "uri": "tel:+1-555-0100", "label": "+1 555-0100"},
            {"entryPointType": "video", "uri": "https://zoom.us/j/123", "label": "zoom.us/j/123"},
        ],
        "conferenceSolution": {"key": {"type": "addOn"}, "name": "Zoom Meeting"},
        "conferenceId": "123",
    }
    assert from_google(google_event(conferenceData=zoom)).conference_url == "https://zoom.us/j/123"
    assert from_google(google_event()).conference_url is None


def test_graph_conference_from_online_meeting_join_url() -> None:
    join = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0"
    teams = graph_event(isOnlineMeeting=True, onlineMeetingProvider="teamsForBusiness", onlineMeeting={"joinUrl": join})
    assert from_graph(teams).conference_url == join
    assert from_graph(graph_event()).conference_url is None


# ---- the whole event, and odd data -------------------------------------------------------------


def test_minimal_items_give_nulls_and_empty_lists() -> None:
    assert from_google({"id": "e1"}) == NormalizedEvent(provider_event_id="e1")
    assert from_graph({"id": "e1"}) == NormalizedEvent(provider_event_id="e1")


def test_wrongly_typed_fields_count_as_absent() -> None:
    odd: dict[str, Any] = {"id": "e1", "summary": 3, "start": "tomorrow", "attendees": {"x": 1}, "organizer": []}
    assert from_google(odd) == NormalizedEvent(provider_event_id="e1")
    odd = {"id": "e1", "subject": None, "start": [], "attendees": ["x"], "organizer": {"emailAddress": "x"}}
    assert from_graph(odd) == NormalizedEvent(provider_event_id="e1")


def test_the_json_form_round_trips() -> None:
    event = from_google(
        google_event(
            attendees=[{"email": "bob@example.com", "responseStatus": "accepted"}],
            recurringEventId="s1",
            originalStartTime={"dateTime": "2024-05-06T09:00:00Z"},
            hangoutLink="https://meet.google.com/abc-defg-hij",
        )
    )
    assert NormalizedEvent.from_json(event.as_json()) == event
