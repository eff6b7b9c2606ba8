"""Issue 21 acceptance: a receiver mirroring a CalDAV calendar from calendar.event.* webhooks alone ends equal to
both GET /v1/calendar/events and Radicale's own contents (UIDs, titles, starts), with every change delivered once.

The calendar is written the way any CalDAV client writes it (plain HTTP PUT/DELETE of iCalendar text); each step
is followed by a sync through the API and a real (burst) worker that runs it and delivers the webhooks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import icalendar
import pytest
import recurring_ical_events

from sync_trigger import connections
from sync_trigger.schemas import CalDAVConnectionBody
from synchook.context import AppContext
from synchook.providers import Provider
from tests.factories import Tenant, make_tenant
from tests.factories.webhooks import make_subscription
from tests.support.radicale import CalDAVAccount, vevent
from tests.support.receiver import Receiver
from tests.support.sync_harness import soon
from tests.sync_trigger.test_change_events import all_events, mirror_of

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

BOB = "ATTENDEE;CN=Bob;PARTSTAT={}:mailto:bob@example.com"
DAY = timedelta(days=1)


def ical(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def connect(ctx: AppContext, tenant: Tenant, dav: CalDAVAccount) -> None:
    body = CalDAVConnectionBody(
        provider=Provider.CALDAV,
        account=dav.username,
        server_url=dav.url,
        username=dav.username,
        password=dav.password,
    )
    async with ctx.db.session() as session:
        await connections.create_connection(session, box=ctx.box, workspace_id=tenant.workspace_id, body=body)


def put(dav: CalDAVAccount, uid: str, title: str, start: datetime, **extra: Any) -> None:
    dav.put_event("work", uid, vevent(uid, title, ical(start), ical(start + timedelta(minutes=30)), **extra))


def put_all_day(dav: CalDAVAccount, uid: str, title: str, day: date) -> None:
    text = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//synchook tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20261201T000000Z\r\nDTSTART;VALUE=DATE:{day:%Y%m%d}\r\n"
        f"DTEND;VALUE=DATE:{day + DAY:%Y%m%d}\r\nSUMMARY:{title}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    dav.put_event("work", uid, text)


def put_series(dav: CalDAVAccount, first: datetime, *, moved_title: str) -> None:
    """Daily x4 from `first`: the 2nd instance moved two hours later and renamed, the 3rd cancelled."""
    moved, cancelled = first + DAY, first + 2 * DAY
    overrides = (
        f"BEGIN:VEVENT\r\nUID:series\r\nDTSTAMP:20261201T000000Z\r\nRECURRENCE-ID:{ical(moved)}\r\n"
        f"DTSTART:{ical(moved + timedelta(hours=2))}\r\nDTEND:{ical(moved + timedelta(hours=3))}\r\n"
        f"SUMMARY:{moved_title}\r\nEND:VEVENT\r\n"
        f"BEGIN:VEVENT\r\nUID:series\r\nDTSTAMP:20261201T000000Z\r\nRECURRENCE-ID:{ical(cancelled)}\r\n"
        f"DTSTART:{ical(cancelled)}\r\nDTEND:{ical(cancelled + timedelta(hours=1))}\r\n"
        "SUMMARY:Standup\r\nSTATUS:CANCELLED\r\nEND:VEVENT"
    )
    put(dav, "series", "Standup", first, extra="RRULE:FREQ=DAILY;COUNT=4", more=overrides)


def radicale_contents(dav: CalDAVAccount) -> dict[str, tuple[str, str]]:
    """The calendar as Radicale holds it (GET of the collection: one VCALENDAR with every member), expanded over
    the default sync window as the connector does; cancelled instances are not events. Keyed like the index:
    the UID, or UID/RECURRENCE-ID (UTC) for an instance of a series."""
    response = httpx.get(dav.url + dav.calendar_path("work"), auth=(dav.username, dav.password), timeout=30)
    assert response.status_code == 200, response.text
    calendar = icalendar.Calendar.from_ical(response.text)
    series = {str(c["UID"]) for c in calendar.walk("VEVENT") if "RRULE" in c or "RECURRENCE-ID" in c}
    window = (datetime.now(UTC) - 90 * DAY, datetime.now(UTC) + 180 * DAY)
    found: dict[str, tuple[str, str]] = {}
    for component in recurring_ical_events.of(calendar, components=["VEVENT"]).between(*window):
        if str(component.get("STATUS", "")).upper() == "CANCELLED":
            continue
        uid = str(component["UID"])
        key = f"{uid}/{ical(component['RECURRENCE-ID'].dt.astimezone(UTC))}" if uid in series else uid
        found[key] = (str(component["SUMMARY"]), start_text(component["DTSTART"].dt))
    return found


def start_text(value: date | datetime) -> str:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value.isoformat()


def as_seen(events: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """Mirror or API events by provider event id: (title, start) with the start parsed back to one spelling."""
    seen: dict[str, tuple[str, str]] = {}
    for event in events.values():
        start = event["start"]
        when = start_text(datetime.fromisoformat(start["date_time"])) if start.get("date_time") else start["date"]
        seen[event["provider_event_id"]] = (event["title"], when)
    return seen


async def test_a_receiver_mirrors_a_caldav_calendar_from_webhooks_alone(
    app_ctx: AppContext,
    tenant: Tenant,
    client: httpx.AsyncClient,
    caldav: CalDAVAccount,
    receiver: Receiver,
    run_worker: Callable[..., Awaitable[Any]],
) -> None:
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/mirror"), event_types=["calendar.event.*"])
    caldav.make_calendar("work")
    await connect(app_ctx, tenant, caldav)

    async def sync_and_deliver() -> None:
        response = await client.post("/v1/calendar/sync", headers=tenant.headers, json={})
        assert response.status_code == 202, response.text
        job_id = response.json()["data"]["job_id"]
        await run_worker()
        job = (await client.get(f"/v1/calendar/sync/{job_id}", headers=tenant.headers)).json()["data"]
        assert job["status"] == "completed", job

    async def mirrored() -> dict[str, tuple[str, str]]:
        """The receiver's mirror so far, checked against the API and against Radicale."""
        await asyncio.sleep(0)
        mirror = mirror_of([json.loads(r.body) for r in receiver.requests("/mirror")])
        assert mirror == await all_events(client, tenant)
        assert as_seen(mirror) == radicale_contents(caldav)
        return as_seen(mirror)

    base = soon(0)  # read once: every time below stays the same even if the hour turns mid-test
    first = base + timedelta(hours=24)

    def at(hours: int) -> datetime:
        return base + timedelta(hours=hours)

    holiday = (first + 5 * DAY).date()
    # Step 1: creates: plain events, one with an attendee, an all-day event, a recurring series with overrides.
    put(caldav, "plan", "Planning", at(26), extra=BOB.format("NEEDS-ACTION"))
    put(caldav, "review", "Review", at(28))
    put(caldav, "lunch", "Lunch", at(30))
    put_all_day(caldav, "holiday", "Holiday", holiday)
    put_series(caldav, first, moved_title="Standup (late)")
    await sync_and_deliver()
    late = first + DAY + timedelta(hours=2)
    assert await mirrored() == {
        "plan": ("Planning", start_text(at(26))),
        "review": ("Review", start_text(at(28))),
        "lunch": ("Lunch", start_text(at(30))),
        "holiday": ("Holiday", holiday.isoformat()),
        f"series/{ical(first)}": ("Standup", start_text(first)),
        f"series/{ical(first + DAY)}": ("Standup (late)", start_text(late)),
        f"series/{ical(first + 3 * DAY)}": ("Standup", start_text(first + 3 * DAY)),
    }
    # Step 2: a title edit, a time edit, an attendee's answer.
    put(caldav, "review", "Review (v2)", at(28))
    put(caldav, "lunch", "Lunch", at(31))
    put(caldav, "plan", "Planning", at(26), extra=BOB.format("ACCEPTED"))
    await sync_and_deliver()
    assert (await mirrored())["lunch"] == ("Lunch", start_text(at(31)))
    # Step 3: deletes, a new event, the all-day event moved, the series' override renamed.
    caldav.delete_event("work", "lunch")
    put(caldav, "added", "Added later", at(50))
    put_all_day(caldav, "holiday", "Holiday (moved)", holiday + DAY)
    put_series(caldav, first, moved_title="Standup (very late)")
    await sync_and_deliver()
    assert await mirrored() == {
        "plan": ("Planning", start_text(at(26))),
        "review": ("Review (v2)", start_text(at(28))),
        "added": ("Added later", start_text(at(50))),
        "holiday": ("Holiday (moved)", (holiday + DAY).isoformat()),
        f"series/{ical(first)}": ("Standup", start_text(first)),
        f"series/{ical(first + DAY)}": ("Standup (very late)", start_text(late)),
        f"series/{ical(first + 3 * DAY)}": ("Standup", start_text(first + 3 * DAY)),
    }
    # Step 4: the whole series goes, and the freshly added event too.
    caldav.delete_event("work", "series")
    caldav.delete_event("work", "added")
    await sync_and_deliver()
    # Step 5: nothing changed: nothing is delivered.
    before = len(receiver.requests("/mirror"))
    await sync_and_deliver()

    await asyncio.sleep(0)
    bodies = [json.loads(r.body) for r in receiver.requests("/mirror")]
    assert len(bodies) == before
    # One change per real difference: 7 creations, then exactly the edits and deletions made.
    changes = [(b["type"].rsplit(".", 1)[1], b["data"]["event"]["provider_event_id"]) for b in bodies]
    instances = [f"series/{ical(first + n * DAY)}" for n in (0, 1, 3)]
    assert sorted(changes) == sorted(
        [("created", k) for k in ["plan", "review", "lunch", "holiday", "added", *instances]]
        + [("updated", k) for k in ["review", "lunch", "plan", "holiday", instances[1]]]
        + [("deleted", k) for k in ["lunch", "added", *instances]]
    )
    assert all(b["type"].startswith("calendar.event.") for b in bodies)
    # Each change delivered exactly once: the sequences are 1..n with no gap and no repeat.
    sequences = sorted(b["data"]["sequence"] for b in bodies)
    assert sequences == list(range(1, len(sequences) + 1))
    assert len({b["id"] for b in bodies}) == len(bodies)

    assert await mirrored() == {
        "plan": ("Planning", start_text(at(26))),
        "review": ("Review (v2)", start_text(at(28))),
        "holiday": ("Holiday (moved)", (holiday + DAY).isoformat()),
    }
    mirror = mirror_of(bodies)
    [plan] = [e for e in mirror.values() if e["provider_event_id"] == "plan"]
    assert plan["attendees"][0]["response"] == "accepted"
