"""run_sync against a real CalDAV server (Radicale) on SQLite and PostgreSQL: the index ends equal to the
Radicale calendar (UIDs, titles, starts), with exact stats; stale tokens and wrong passwords as the contract says."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from sync_trigger import connections, runner
from sync_trigger.models import Connection
from sync_trigger.schemas import CalDAVConnectionBody
from synchook.context import AppContext
from synchook.fakes import FakeProviders
from synchook.providers import Provider
from tests.factories import make_tenant
from tests.support.radicale import CalDAVAccount, vevent, vevent_block
from tests.support.sync_harness import SyncHarness, soon, stats


def ical(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


@pytest.fixture
async def h(app_ctx: AppContext, fake: FakeProviders) -> SyncHarness:
    tenant = await make_tenant(app_ctx)
    return SyncHarness(app_ctx, fake, tenant.workspace_id)


async def connect(h: SyncHarness, dav: CalDAVAccount, *, password: str | None = None) -> Connection:
    body = CalDAVConnectionBody(
        provider=Provider.CALDAV,
        account=dav.username,
        server_url=dav.url,
        username=dav.username,
        password=password or dav.password,
    )
    async with h.ctx.db.session() as session:
        return await connections.create_connection(session, box=h.ctx.box, workspace_id=h.workspace_id, body=body)


def put(dav: CalDAVAccount, uid: str, title: str, start: datetime, **extra: Any) -> None:
    dav.put_event("work", uid, vevent(uid, title, ical(start), ical(start + timedelta(minutes=30)), **extra))


async def index_contents(h: SyncHarness) -> dict[str, tuple[str | None, datetime | None]]:
    return {event_id: (e.summary, e.start) for event_id, e in (await h.events()).items()}


async def test_index_mirrors_the_calendar_through_create_edit_delete(h: SyncHarness, caldav: CalDAVAccount) -> None:
    caldav.make_calendar("work")
    for n in range(3):
        put(caldav, f"e{n}", f"Event {n}", soon(24 + n))
    put(caldav, "old", "Long ago", soon(-24 * 200))  # outside the default window
    connection = await connect(h, caldav)

    assert await h.run() == stats(created=3)
    assert await index_contents(h) == {f"e{n}": (f"Event {n}", soon(24 + n)) for n in range(3)}
    assert (await h.connection(connection.id)).status == "active"

    assert await h.run() == stats()  # nothing changed: nothing written

    put(caldav, "e0", "Event 0 (moved)", soon(30))
    put(caldav, "e3", "Event 3", soon(40))
    caldav.delete_event("work", "e1")
    assert await h.run() == stats(created=1, updated=1, deleted=1)
    assert await index_contents(h) == {
        "e0": ("Event 0 (moved)", soon(30)),
        "e2": ("Event 2", soon(26)),
        "e3": ("Event 3", soon(40)),
    }


async def test_attendee_response_change_is_an_update(h: SyncHarness, caldav: CalDAVAccount) -> None:
    caldav.make_calendar("work")
    attendee = "ATTENDEE;CN=Bob;PARTSTAT=NEEDS-ACTION:mailto:bob@example.com"
    put(caldav, "m", "Meeting", soon(24), extra=attendee)
    await connect(h, caldav)
    await h.run()

    put(caldav, "m", "Meeting", soon(24), extra=attendee.replace("NEEDS-ACTION", "DECLINED"))

    assert await h.run() == stats(updated=1)


async def test_recurring_series_becomes_its_instances(h: SyncHarness, caldav: CalDAVAccount) -> None:
    caldav.make_calendar("work")
    first = soon(24)
    moved, cancelled = first + timedelta(days=1), first + timedelta(days=2)
    overrides = (
        f"BEGIN:VEVENT\r\nUID:s\r\nDTSTAMP:20261201T000000Z\r\nRECURRENCE-ID:{ical(moved)}\r\n"
        f"DTSTART:{ical(moved + timedelta(hours=2))}\r\nDTEND:{ical(moved + timedelta(hours=3))}\r\n"
        "SUMMARY:Series (late)\r\nEND:VEVENT\r\n"
        f"BEGIN:VEVENT\r\nUID:s\r\nDTSTAMP:20261201T000000Z\r\nRECURRENCE-ID:{ical(cancelled)}\r\n"
        f"DTSTART:{ical(cancelled)}\r\nDTEND:{ical(cancelled + timedelta(hours=1))}\r\n"
        "SUMMARY:Series\r\nSTATUS:CANCELLED\r\nEND:VEVENT"
    )
    put(caldav, "s", "Series", first, extra="RRULE:FREQ=DAILY;COUNT=4", more=overrides)
    await connect(h, caldav)

    assert await h.run() == stats(created=3)
    day = timedelta(days=1)
    assert await index_contents(h) == {
        f"s/{ical(first)}": ("Series", first),
        f"s/{ical(moved)}": ("Series (late)", moved + timedelta(hours=2)),
        f"s/{ical(first + 3 * day)}": ("Series", first + 3 * day),
    }


async def test_thousand_events_then_one_change(h: SyncHarness, caldav: CalDAVAccount) -> None:
    blocks = [
        vevent_block(f"e{n}", f"Event {n}", ical(soon(n)), ical(soon(n) + timedelta(minutes=30))) for n in range(1000)
    ]
    caldav.put_calendar("work", blocks)
    await connect(h, caldav)
    assert await h.run() == stats(created=1000)

    put(caldav, "e7", "Event 7 (edited)", soon(7))

    assert await h.run() == stats(updated=1)
    assert (await index_contents(h))["e7"] == ("Event 7 (edited)", soon(7))


async def test_stale_sync_token_runs_a_full_sync(h: SyncHarness, caldav: CalDAVAccount) -> None:
    caldav.make_calendar("work")
    put(caldav, "a", "A", soon(24))
    put(caldav, "b", "B", soon(25))
    await connect(h, caldav)
    await h.run()
    # The server forgot our token (Radicale answers 403 valid-sync-token); meanwhile b was deleted.
    calendar = next(iter((await h.calendars()).values()))
    state = json.loads(calendar.sync_cursor or "")
    state["token"] = state["token"] + "0000"
    async with h.ctx.db.session() as session:
        calendar.sync_cursor = json.dumps(state)
        session.add(calendar)
    caldav.delete_event("work", "b")

    assert await h.run() == stats(deleted=1)
    assert await index_contents(h) == {"a": ("A", soon(24))}


async def test_wrong_password_is_reauth_required(h: SyncHarness, caldav: CalDAVAccount) -> None:
    caldav.make_calendar("work")
    connection = await connect(h, caldav, password="not-the-password")

    with pytest.raises(runner.SyncFailure) as failure:
        await h.run()

    assert failure.value.code == "reauth_required"
    assert "username or password" in failure.value.message and "not-the-password" not in failure.value.message
    assert (await h.connection(connection.id)).status == "reauth_required"


@pytest.mark.parametrize("settings_overrides", [{"allow_private_targets": False}])
async def test_private_server_is_refused_at_sync_time(h: SyncHarness, caldav: CalDAVAccount) -> None:
    # Stored directly (the API refuses it at creation): as if the name had turned private since (DNS rebinding).
    caldav.make_calendar("work")
    connection = await connect(h, caldav)

    with pytest.raises(runner.SyncFailure) as failure:
        await h.run()

    assert failure.value.code == "provider_error" and "refused" in failure.value.message
    assert (await h.connection(connection.id)).status == "active"
