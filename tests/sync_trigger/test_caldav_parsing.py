"""CalDAV without a server: the multistatus reader refuses entity tricks; VEVENT fields map per PROVIDERS.md §5."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from sync_trigger.connectors.caldav_ical import instances
from sync_trigger.connectors.caldav_xml import XMLError, parse_error_conditions, parse_multistatus
from sync_trigger.connectors.normalized import AttendeeResponse, EventStatus

WINDOW = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC))

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<d:multistatus xmlns:d="DAV:"><d:response><d:href>&lol3;</d:href></d:response></d:multistatus>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>
<d:multistatus xmlns:d="DAV:"><d:response><d:href>&ext;</d:href></d:response></d:multistatus>"""


@pytest.mark.parametrize(
    "body", [LAUGHS, EXTERNAL, b"<not xml", b'<d:error xmlns:d="DAV:"/>'], ids=["laughs", "ext", "bad", "other"]
)
def test_multistatus_reader_refuses_entities_and_junk(body: bytes) -> None:
    with pytest.raises(XMLError):
        parse_multistatus(body)


def test_error_conditions_name_the_precondition() -> None:
    assert parse_error_conditions(b'<d:error xmlns:d="DAV:"><d:valid-sync-token/></d:error>') == {"valid-sync-token"}
    assert parse_error_conditions(LAUGHS) == set()


def test_a_vevent_maps_field_by_field() -> None:
    ics = "\r\n".join(
        [
            "BEGIN:VCALENDAR", "VERSION:2.0", "BEGIN:VEVENT", "UID:u1", "DTSTAMP:20261201T100000Z",
            "DTSTART:20261204T090000Z", "DURATION:PT45M", "SUMMARY:Plan", "DESCRIPTION:" + "x" * 9000,
            "LOCATION:Room 1", "STATUS:CANCELLED", "TRANSP:OPAQUE",
            "ORGANIZER:mailto:boss@example.com",
            "ATTENDEE;PARTSTAT=TENTATIVE;ROLE=REQ-PARTICIPANT:mailto:a@example.com",
            "ATTENDEE;PARTSTAT=DECLINED:mailto:b@example.com",
            "X-GOOGLE-CONFERENCE:https://meet.google.com/abc",
            "END:VEVENT", "END:VCALENDAR", "",
        ]
    )  # fmt: skip

    [one] = instances(ics, WINDOW)

    event = one.event
    assert (event.provider_event_id, event.ical_uid, event.title, event.location) == ("u1", "u1", "Plan", "Room 1")
    assert event.description is not None and len(event.description.encode()) == 8 * 1024
    assert event.end is not None and event.end.date_time == datetime(2026, 12, 4, 9, 45, tzinfo=UTC)
    assert one.end == datetime(2026, 12, 4, 9, 45, tzinfo=UTC)
    assert event.status is EventStatus.CANCELLED and event.busy
    assert event.organizer is not None and (event.organizer.email, event.organizer.name) == ("boss@example.com", None)
    assert [(a.email, a.response, a.optional) for a in event.attendees] == [
        ("a@example.com", AttendeeResponse.TENTATIVE, False),
        ("b@example.com", AttendeeResponse.DECLINED, False),
    ]
    assert event.conference_url == "https://meet.google.com/abc"
    assert event.recurring_event_id is None and event.original_start is None and event.html_link is None
    assert event.updated_at == datetime(2026, 12, 1, 10, tzinfo=UTC)  # DTSTAMP when no LAST-MODIFIED


def test_an_all_day_series_keys_its_instances_by_date() -> None:
    ics = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:w\r\nDTSTAMP:20261201T000000Z\r\n"
        "DTSTART;VALUE=DATE:20261207\r\nDTEND;VALUE=DATE:20261208\r\nRRULE:FREQ=WEEKLY;COUNT=2\r\n"
        "SUMMARY:Weekly\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )

    found = instances(ics, WINDOW)

    assert [i.event_id for i in found] == ["w/20261207", "w/20261214"]
    second = found[1].event
    assert second.all_day and second.start is not None and second.start.date == date(2026, 12, 14)
    assert second.original_start is not None and second.original_start.date == date(2026, 12, 14)
    assert found[1].end is not None and found[1].end - found[1].start == timedelta(days=1)  # type: ignore[operator]


def test_an_unreadable_member_yields_nothing() -> None:
    assert instances("BEGIN:VCALENDAR\r\nthis is not ical", WINDOW) == []
