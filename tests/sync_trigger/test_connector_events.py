"""Both connectors hand over the normalised event (CONTRACT §6.1) of every live item, read from the fakes' wire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import aiohttp
import pytest

from sync_trigger.connectors import EventChange
from sync_trigger.connectors.normalized import Attendee, AttendeeResponse, EventStatus, EventTime, Person
from synchook.fakes import FakeProviders
from tests.support.connector_harness import ALICE, Harness, collect

START = datetime(2024, 5, 2, 9, tzinfo=UTC)
MEET = "https://meet.example.com/abc-defg-hij"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(params=["google", "microsoft"])
def h(request: pytest.FixtureRequest, fake: FakeProviders, session: aiohttp.ClientSession) -> Harness:
    fake.add_account(request.param, ALICE)
    return Harness(fake, session, request.param)


async def changes(h: Harness, cursor: str | None = None) -> tuple[dict[str, EventChange], str]:
    pages = await collect(h.connector(), cursor)
    final = pages[-1].next_cursor
    assert final is not None
    return {c.event_id: c for p in pages for c in p.changes}, final


async def test_mapped_events_carry_attendees_organizer_location_and_conference(h: Harness) -> None:
    meeting = h.fake.put_event(
        h.provider, ALICE, ALICE, summary="Design review", start=START, end=START + timedelta(hours=1),
        time_zone="Europe/Zurich", description="Agenda", location="Room 4.01", organizer=(ALICE, "Alice"),
        conference_url=MEET, status="tentative", busy=False,
        attendees=[
            {"email": "bob@example.com", "name": "Bob", "response": "accepted"},
            {"email": "carol@example.com", "name": "Carol", "response": "needs_action", "optional": True},
        ],
    )  # fmt: skip
    found, _ = await changes(h)
    event = found[meeting].event
    assert event is not None
    assert (event.provider_event_id, event.title, event.location) == (meeting, "Design review", "Room 4.01")
    assert event.description is not None and "Agenda" in event.description
    assert event.start == EventTime(date_time=START, time_zone="Europe/Zurich")
    assert event.end == EventTime(date_time=START + timedelta(hours=1), time_zone="Europe/Zurich")
    assert event.organizer == Person(ALICE, "Alice")
    assert event.attendees == (
        Attendee("bob@example.com", "Bob", AttendeeResponse.ACCEPTED, False),
        Attendee("carol@example.com", "Carol", AttendeeResponse.NEEDS_ACTION, True),
    )
    assert event.conference_url == MEET and event.status == EventStatus.TENTATIVE
    # Google: tentative and transparent; Graph: showAs tentative wins over free, which keeps it busy.
    assert event.busy is (h.provider == "microsoft")
    assert event.ical_uid and event.html_link and event.updated_at is not None


async def test_all_day_and_recurring_instances_are_mapped(h: Harness) -> None:
    offsite = h.fake.put_event(
        h.provider, ALICE, ALICE, summary="Offsite", start=date(2024, 5, 3), end=date(2024, 5, 4)
    )
    series, instances = h.fake.add_series(h.provider, ALICE, ALICE, 2, first=START)
    found, _ = await changes(h)
    all_day = found[offsite].event
    assert all_day is not None and all_day.all_day
    assert (all_day.start.date, all_day.end.date) == (date(2024, 5, 3), date(2024, 5, 4))  # type: ignore[union-attr]
    assert all_day.start.date_time is None  # type: ignore[union-attr]
    second = found[instances[1]].event
    assert second is not None and second.recurring_event_id == series
    assert second.original_start is not None and second.original_start.date_time == START + timedelta(days=7)


async def test_an_edit_and_an_answer_reach_the_next_incremental_round_and_deletions_carry_no_event(h: Harness) -> None:
    meeting = h.fake.put_event(
        h.provider, ALICE, ALICE, start=START, attendees=[{"email": "bob@example.com", "response": "needs_action"}]
    )
    gone = h.fake.put_event(h.provider, ALICE, ALICE, start=START)
    _, cursor = await changes(h)
    title = "summary" if h.provider == "google" else "subject"
    h.fake.edit_event(h.provider, ALICE, ALICE, meeting, {title: "Renamed"})
    h.fake.set_attendee_response(h.provider, ALICE, ALICE, meeting, "bob@example.com", "declined")
    h.fake.delete_event(h.provider, ALICE, ALICE, gone)
    found, _ = await changes(h, cursor)
    event = found[meeting].event
    assert event is not None and event.title == "Renamed"
    assert [a.response for a in event.attendees] == [AttendeeResponse.DECLINED]
    assert found[gone].deleted and found[gone].event is None
