"""CalDAV connector against a real CalDAV server (Radicale) over loopback HTTP, events added by plain PUTs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import aiohttp
import pytest

from sync_trigger.connectors import (
    CalDAVConnector,
    CalDAVCredentials,
    ChangePage,
    CursorExpired,
    ProviderError,
    ReauthRequired,
    build_connector,
)
from sync_trigger.connectors.normalized import AttendeeResponse, EventStatus
from tests.support.minimal_caldav import MinimalCalDAV
from tests.support.radicale import CalDAVAccount, vevent, vevent_block

WINDOW = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC))

ZURICH = """BEGIN:VTIMEZONE
TZID:Europe/Zurich
BEGIN:STANDARD
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
END:DAYLIGHT
END:VTIMEZONE"""


async def allow_any(url: str) -> str:
    return url  # Radicale is on 127.0.0.1 over http: as with SYNCHOOK_ALLOW_PRIVATE_TARGETS=true


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def connector(
    session: aiohttp.ClientSession, dav: CalDAVAccount, *, password: str | None = None, **options: Any
) -> CalDAVConnector:
    credentials = CalDAVCredentials(dav.url, dav.username, password or dav.password)
    options.setdefault("check_url", allow_any)
    built = build_connector("caldav", session, None, None, None, caldav=credentials, **options)  # type: ignore[arg-type]
    assert isinstance(built, CalDAVConnector)
    return built


async def collect(c: CalDAVConnector, calendar: str, cursor: str | None) -> list[ChangePage]:
    return [page async for page in c.changes(calendar, cursor=cursor, window=None if cursor else WINDOW)]


async def full(c: CalDAVConnector, calendar: str) -> tuple[dict[str, object], str]:
    pages = await collect(c, calendar, None)
    assert [p.next_cursor is not None for p in pages][-1]
    changes = {ch.event_id: ch for p in pages for ch in p.changes}
    cursor = pages[-1].next_cursor
    assert cursor is not None
    return changes, cursor


async def test_discovery_lists_only_event_calendars(session: aiohttp.ClientSession, caldav: CalDAVAccount) -> None:
    caldav.make_calendar("work", name="Work")
    caldav.make_calendar("todo", component="VTODO")

    checked: list[str] = []

    async def check(url: str) -> str:
        checked.append(url)
        return url

    calendars = await connector(session, caldav, check_url=check).list_calendars()

    assert [(c.id, c.name) for c in calendars] == [(f"{caldav.url}/{caldav.username}/work/", "Work")]
    # well-known, its redirect (Radicale answers 301 to /), the principal, the calendar home: each one checked.
    assert checked == [
        f"{caldav.url}/.well-known/caldav",
        f"{caldav.url}/",
        f"{caldav.url}/{caldav.username}/",
        f"{caldav.url}/{caldav.username}/",
    ]


async def test_full_then_create_edit_delete_incrementally(
    session: aiohttp.ClientSession, caldav: CalDAVAccount
) -> None:
    caldav.make_calendar("work")
    cal = f"{caldav.url}/{caldav.username}/work/"
    attendee = "ATTENDEE;CN=Bob;PARTSTAT=NEEDS-ACTION;ROLE=OPT-PARTICIPANT:mailto:bob@example.com"
    organizer = "ORGANIZER;CN=Alice:mailto:alice@example.com"
    caldav.put_event(
        "work",
        "standup",
        vevent("standup@x", "Standup", "20261204T090000Z", "20261204T091500Z", extra=f"{organizer}\r\n{attendee}"),
    )
    c = connector(session, caldav)

    changes, cursor = await full(c, cal)
    event = changes["standup@x"].event
    assert event is not None and event.title == "Standup" and event.ical_uid == "standup@x"
    assert event.organizer is not None and event.organizer.email == "alice@example.com"
    assert event.organizer.name == "Alice"
    assert [(a.email, a.name, a.response, a.optional) for a in event.attendees] == [
        ("bob@example.com", "Bob", AttendeeResponse.NEEDS_ACTION, True)
    ]
    assert changes["standup@x"].start == datetime(2026, 12, 4, 9, tzinfo=UTC)

    # Nothing changed: an empty round, the same state.
    pages = await collect(c, cal, cursor)
    assert [ch for p in pages for ch in p.changes] == []

    # Edit: title, time and the attendee's PARTSTAT; and a new event.
    accepted = attendee.replace("NEEDS-ACTION", "ACCEPTED")
    caldav.put_event(
        "work",
        "standup",
        vevent(
            "standup@x", "Standup (moved)", "20261204T100000Z", "20261204T101500Z", extra=f"{organizer}\r\n{accepted}"
        ),
    )
    caldav.put_event("work", "review", vevent("review@x", "Review", "20261205T130000Z", "20261205T140000Z"))
    pages = await collect(c, cal, cursor)
    cursor = pages[-1].next_cursor or ""
    edited = {ch.event_id: ch for p in pages for ch in p.changes}
    assert sorted(edited) == ["review@x", "standup@x"]
    moved = edited["standup@x"].event
    assert moved is not None and moved.title == "Standup (moved)"
    assert moved.start is not None and moved.start.date_time == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert moved.attendees[0].response is AttendeeResponse.ACCEPTED

    # Delete: the member answers 404 in sync-collection.
    caldav.delete_event("work", "standup")
    pages = await collect(c, cal, cursor)
    assert [(ch.event_id, ch.deleted) for p in pages for ch in p.changes] == [("standup@x", True)]


async def test_recurring_series_with_overridden_and_cancelled_instances(
    session: aiohttp.ClientSession, caldav: CalDAVAccount
) -> None:
    caldav.make_calendar("work")
    cal = f"{caldav.url}/{caldav.username}/work/"
    overrides = (
        "BEGIN:VEVENT\r\nUID:daily@x\r\nDTSTAMP:20261201T000000Z\r\nRECURRENCE-ID:20261202T090000Z\r\n"
        "DTSTART:20261202T110000Z\r\nDTEND:20261202T113000Z\r\nSUMMARY:Daily (late)\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:daily@x\r\nDTSTAMP:20261201T000000Z\r\nRECURRENCE-ID:20261203T090000Z\r\n"
        "DTSTART:20261203T090000Z\r\nDTEND:20261203T093000Z\r\nSUMMARY:Daily\r\nSTATUS:CANCELLED\r\nEND:VEVENT"
    )
    caldav.put_event(
        "work",
        "daily",
        vevent(
            "daily@x", "Daily", "20261201T090000Z", "20261201T093000Z", extra="RRULE:FREQ=DAILY;COUNT=4", more=overrides
        ),
    )
    c = connector(session, caldav)

    changes, cursor = await full(c, cal)

    assert sorted(changes) == ["daily@x/20261201T090000Z", "daily@x/20261202T090000Z", "daily@x/20261204T090000Z"]
    late = changes["daily@x/20261202T090000Z"].event
    assert late is not None and late.title == "Daily (late)" and late.recurring_event_id == "daily@x"
    assert late.start is not None and late.start.date_time == datetime(2026, 12, 2, 11, tzinfo=UTC)
    assert late.original_start is not None and late.original_start.date_time == datetime(2026, 12, 2, 9, tzinfo=UTC)

    # Cancel one more occurrence (EXDATE) and the series is re-read: that instance is deleted.
    caldav.put_event(
        "work",
        "daily",
        vevent(
            "daily@x", "Daily", "20261201T090000Z", "20261201T093000Z",
            extra="RRULE:FREQ=DAILY;COUNT=4\r\nEXDATE:20261204T090000Z", more=overrides,
        ),
    )  # fmt: skip
    pages = await collect(c, cal, cursor)
    after = [(ch.event_id, ch.deleted) for p in pages for ch in p.changes]
    assert ("daily@x/20261204T090000Z", True) in after
    assert ("daily@x/20261201T090000Z", False) in after


async def test_all_day_and_vtimezone_events(session: aiohttp.ClientSession, caldav: CalDAVAccount) -> None:
    caldav.make_calendar("work")
    cal = f"{caldav.url}/{caldav.username}/work/"
    caldav.put_event(
        "work",
        "holiday",
        vevent("holiday@x", "Holiday", "20261224", "20261225", extra="TRANSP:TRANSPARENT")
        .replace("DTSTART:", "DTSTART;VALUE=DATE:")
        .replace("DTEND:", "DTEND;VALUE=DATE:"),
    )
    caldav.put_event(
        "work",
        "zurich",
        vevent(
            "zurich@x", "Zurich call", "20261204T090000", "20261204T100000", tzid="Europe/Zurich",
            timezone_block=ZURICH, extra="STATUS:TENTATIVE\r\nURL:https://meet.example.com/abc\r\nLAST-MODIFIED:20261202T080000Z",
        ),
    )  # fmt: skip

    changes, _ = await full(connector(session, caldav), cal)

    holiday = changes["holiday@x"].event
    assert holiday is not None and holiday.all_day and not holiday.busy
    assert holiday.start is not None and holiday.start.date == date(2026, 12, 24) and holiday.start.date_time is None
    assert holiday.end is not None and holiday.end.date == date(2026, 12, 25)
    zurich = changes["zurich@x"].event
    assert zurich is not None and zurich.start is not None
    assert zurich.start.date_time == datetime(2026, 12, 4, 8, tzinfo=UTC)  # 09:00 CET
    assert zurich.start.time_zone == "Europe/Zurich"
    assert zurich.status is EventStatus.TENTATIVE
    assert zurich.conference_url == "https://meet.example.com/abc"
    assert zurich.updated_at == datetime(2026, 12, 2, 8, tzinfo=UTC)


async def test_thousand_events_in_pages_then_one_change(session: aiohttp.ClientSession, caldav: CalDAVAccount) -> None:
    blocks = [
        vevent_block(f"e{n}@x", f"Event {n}", f"202612{1 + n % 28:02d}T090000Z", f"202612{1 + n % 28:02d}T100000Z")
        for n in range(1000)
    ]
    cal = caldav.url + caldav.put_calendar("big", blocks)
    c = connector(session, caldav)

    pages = await collect(c, cal, None)
    assert len(pages) == 10 and all(p.next_cursor is None for p in pages[:-1])
    assert len({ch.event_id for p in pages for ch in p.changes}) == 1000
    cursor = pages[-1].next_cursor

    caldav.put_event("big", "e7@x", vevent("e7@x", "Event 7 (edited)", "20261208T090000Z", "20261208T100000Z"))
    before = c.requests
    pages = await collect(c, cal, cursor)
    assert [(ch.event_id, ch.summary) for p in pages for ch in p.changes] == [("e7@x", "Event 7 (edited)")]
    assert c.requests - before == 2  # one sync-collection, one calendar-multiget


async def test_stale_sync_token_means_full_sync(session: aiohttp.ClientSession, caldav: CalDAVAccount) -> None:
    caldav.make_calendar("work")
    cal = f"{caldav.url}/{caldav.username}/work/"
    _, cursor = await full(connector(session, caldav), cal)
    stale = cursor.replace('"token":"http://radicale.org/ns/sync/', '"token":"http://radicale.org/ns/sync/0000')

    with pytest.raises(CursorExpired):
        await collect(connector(session, caldav), cal, stale)


async def test_wrong_password_is_reauth_required(session: aiohttp.ClientSession, caldav: CalDAVAccount) -> None:
    caldav.make_calendar("work")

    with pytest.raises(ReauthRequired):
        await connector(session, caldav, password="wrong").list_calendars()


# --- A hand-rolled server (tests/support/minimal_caldav.py) where Radicale cannot show the case ---------------


def minimal_connector(session: aiohttp.ClientSession, url: str, **options: Any) -> CalDAVConnector:
    options.setdefault("check_url", allow_any)
    credentials = CalDAVCredentials(url, "u", "p")
    built = build_connector("caldav", session, None, None, None, caldav=credentials, **options)  # type: ignore[arg-type]
    assert isinstance(built, CalDAVConnector)
    return built


def ics(uid: str, title: str, day: int = 4) -> str:
    return vevent(uid, title, f"202612{day:02d}T090000Z", f"202612{day:02d}T100000Z")


async def test_server_without_sync_collection_is_followed_by_ctag_and_etags(session: aiohttp.ClientSession) -> None:
    """Radicale always supports sync-collection: the minimal server has none, only getctag/getetag."""
    async with MinimalCalDAV(sync=False) as server:
        for uid in ("a", "b"):
            server.put(uid, ics(uid, uid.upper()))
        c = minimal_connector(session, server.calendar_url)
        changes, cursor = await full(c, server.calendar_url)
        assert sorted(changes) == ["a", "b"] and json.loads(cursor)["token"] is None

        before = c.requests
        pages = await collect(c, server.calendar_url, cursor)
        assert [ch for p in pages for ch in p.changes] == [] and c.requests - before == 1  # the ctag alone

        server.put("a", ics("a", "A (edited)"))
        server.put("c", ics("c", "C"))
        server.delete("b")
        pages = await collect(c, server.calendar_url, cursor)
        seen = sorted((ch.event_id, ch.deleted, ch.summary) for p in pages for ch in p.changes)
        assert seen == [("a", False, "A (edited)"), ("b", True, None), ("c", False, "C")]
        assert not any("sync-collection" in r for r in server.requests)


async def test_a_refused_sync_collection_report_falls_back_to_etags(session: aiohttp.ClientSession) -> None:
    """Radicale supports the report: the minimal server shows a sync-token but answers 403 supported-report."""
    async with MinimalCalDAV(sync=False, advertise_token=True) as server:
        server.put("a", ics("a", "A"))
        c = minimal_connector(session, server.calendar_url)
        _, cursor = await full(c, server.calendar_url)
        server.put("a", ics("a", "A (edited)"))

        pages = await collect(c, server.calendar_url, cursor)

        assert [(ch.event_id, ch.summary) for p in pages for ch in p.changes] == [("a", "A (edited)")]
        assert json.loads(pages[-1].next_cursor or "")["token"] is None  # etags from now on


async def test_truncated_sync_collection_is_continued_with_the_new_token(session: aiohttp.ClientSession) -> None:
    """Radicale never truncates: the minimal server answers 3 members at a time with a 507 for the collection."""
    async with MinimalCalDAV(page=3) as server:
        server.put("a", ics("a", "A"))
        c = minimal_connector(session, server.calendar_url)
        _, cursor = await full(c, server.calendar_url)
        for n in range(7):
            server.put(f"n{n}", ics(f"n{n}", f"N{n}", day=5 + n))
        server.delete("a")

        pages = await collect(c, server.calendar_url, cursor)

        seen = sorted((ch.event_id, ch.deleted) for p in pages for ch in p.changes)
        assert seen == [("a", True)] + [(f"n{n}", False) for n in range(7)]
        assert sum("sync-collection" in r for r in server.requests) == 3  # 3 + 3 + 2 changes
        assert json.loads(pages[-1].next_cursor or "")["token"] == "tok-9"


async def test_throttling_waits_for_retry_after(session: aiohttp.ClientSession) -> None:
    """Radicale never throttles: the minimal server answers 429 with Retry-After: 2 first."""
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with MinimalCalDAV() as server:
        server.put("a", ics("a", "A"))
        server.throttle = 1
        changes, _ = await full(minimal_connector(session, server.calendar_url, sleep=sleep), server.calendar_url)

    assert sleeps == [2.0] and sorted(changes) == ["a"]


async def test_every_url_passes_the_url_check(session: aiohttp.ClientSession) -> None:
    checked: list[str] = []

    async def refuse_private(url: str) -> str:
        checked.append(url)
        raise ValueError("URL host is a private address")

    async with MinimalCalDAV() as server:
        c = minimal_connector(session, server.calendar_url, check_url=refuse_private)
        with pytest.raises(ProviderError, match="refused: URL host is a private address"):
            await collect(c, server.calendar_url, None)

    assert checked == [server.calendar_url] and server.requests == []
