"""The calendar index: idempotent upserts, exact counts, and GET /v1/calendar/events over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sync_trigger.calendar_index import service
from sync_trigger.calendar_index.models import Calendar
from sync_trigger.connectors import CalendarInfo, EventChange
from sync_trigger.connectors.mapping import from_google
from sync_trigger.models import Connection
from synchook.context import AppContext
from synchook.crypto import Sealed
from synchook.ids import new_id
from synchook.timeutil import isoformat, utcnow
from tests.factories import Tenant, add_key, make_tenant

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


def change(event_id: str, *, hours: float = 0, summary: str = "Meeting", deleted: bool = False) -> EventChange:
    start = T0 + timedelta(hours=hours)
    if deleted:
        return EventChange("cal-1", event_id, deleted=True, raw={"id": event_id, "status": "cancelled"})
    end = start + timedelta(minutes=30)
    raw = {
        "id": event_id, "status": "confirmed", "summary": summary, "description": "x" * 10_000,
        "start": {"dateTime": isoformat(start)}, "end": {"dateTime": isoformat(end)}, "updated": isoformat(T0),
    }  # fmt: skip
    return EventChange(
        "cal-1", event_id, deleted=False, summary=summary, start=start, end=end, updated=T0, raw=raw,
        event=from_google(raw),
    )  # fmt: skip


async def connection_with_calendar(ctx: AppContext, tenant: Tenant, provider: str = "google") -> Calendar:
    connection = Connection(
        id=new_id("conn"),
        workspace_id=tenant.workspace_id,
        provider=provider,
        account=f"{new_id('a')}@example.com",
        access_token_sealed=Sealed("x"),
        refresh_token_sealed=Sealed("x"),
        created_at=utcnow(),
    )
    async with ctx.db.session() as session:
        session.add(connection)
    calendars, _ = await service.sync_calendars(
        ctx.db, connection=connection, calendars=[CalendarInfo("cal-1", "Work")]
    )
    return calendars[0]


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


@pytest.fixture
async def calendar(app_ctx: AppContext, tenant: Tenant) -> Calendar:
    return await connection_with_calendar(app_ctx, tenant)


async def apply(ctx: AppContext, calendar: Calendar, *changes: EventChange, **kw: Any) -> service.IndexCounts:
    return await service.apply_changes(ctx.db, calendar=calendar, changes=list(changes), **kw)


async def test_the_same_change_twice_counts_once(app_ctx: AppContext, calendar: Calendar) -> None:
    assert await apply(app_ctx, calendar, change("a"), change("b")) == service.IndexCounts(created=2)
    assert await apply(app_ctx, calendar, change("a"), change("b")) == service.IndexCounts()
    # Repeated within one page (Graph does this): the last report wins, once.
    counts = await apply(app_ctx, calendar, change("c"), change("a", summary="Renamed"), change("c"))
    assert counts == service.IndexCounts(created=1, updated=1)


async def test_deleting_an_unknown_event_counts_nothing(app_ctx: AppContext, calendar: Calendar) -> None:
    await apply(app_ctx, calendar, change("a"))
    counts = await apply(app_ctx, calendar, change("a", deleted=True), change("ghost", deleted=True))
    assert counts == service.IndexCounts(deleted=1)
    assert await apply(app_ctx, calendar, change("a", deleted=True)) == service.IndexCounts()


async def test_raw_is_trimmed_and_the_cursor_stored_with_the_final_page(
    app_ctx: AppContext, calendar: Calendar, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await apply(app_ctx, calendar, change("a"), cursor="sync-token-1")
    async with app_ctx.db.session() as session:
        stored = await session.get(Calendar, calendar.id)
        assert stored is not None and stored.sync_cursor == "sync-token-1"
    event = (await client.get("/v1/calendar/events", headers=tenant.headers)).json()["data"][0]
    assert event["title"] == "Meeting"
    raw = service.trim_raw(change("a").raw)
    assert "description" not in raw and raw["summary"] == "Meeting"


async def test_calendars_gone_at_the_provider_take_their_events(
    app_ctx: AppContext, calendar: Calendar, tenant: Tenant
) -> None:
    await apply(app_ctx, calendar, change("a"), change("b"))
    async with app_ctx.db.session() as session:
        connection = await session.get(Connection, calendar.connection_id)
    assert connection is not None
    rows, removed = await service.sync_calendars(app_ctx.db, connection=connection, calendars=[])
    assert rows == [] and removed == service.IndexCounts(deleted=2)


async def test_deleting_a_connection_deletes_its_index(
    app_ctx: AppContext, calendar: Calendar, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await apply(app_ctx, calendar, change("a"))
    response = await client.delete(f"/v1/calendar/connections/{calendar.connection_id}", headers=tenant.headers)
    assert response.status_code == 204
    assert (await client.get("/v1/calendar/events", headers=tenant.headers)).json()["data"] == []


# --- GET /v1/calendar/events --------------------------------------------------------------------------


async def test_list_is_by_start_and_pages_with_a_cursor(
    app_ctx: AppContext, calendar: Calendar, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await apply(app_ctx, calendar, *[change(f"e{n}", hours=(n * 7) % 5) for n in range(5)], change("tie", hours=0))
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/calendar/events", headers=tenant.headers, params=params)).json()
        seen += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 6 and len({e["id"] for e in seen}) == 6
    assert [e["start"]["date_time"] for e in seen] == sorted(e["start"]["date_time"] for e in seen)
    # The §6.1 normalised shape.
    assert list(seen[0]) == [
        "id", "calendar_id", "connection_id", "provider", "provider_event_id", "ical_uid", "title", "description",
        "location", "start", "end", "all_day", "status", "busy", "organizer", "attendees", "recurring_event_id",
        "original_start", "conference_url", "html_link", "updated_at",
    ]  # fmt: skip
    assert seen[0]["start"]["date_time"] == "2026-03-01T09:00:00.000Z" and seen[0]["provider"] == "google"
    assert seen[0]["calendar_id"] == calendar.id and seen[0]["connection_id"] == calendar.connection_id


async def test_list_filters_by_calendar_and_time(
    app_ctx: AppContext, calendar: Calendar, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await apply(app_ctx, calendar, change("early", hours=0), change("mid", hours=5), change("late", hours=10))

    async def ids(**params: str) -> list[str]:
        response = await client.get("/v1/calendar/events", headers=tenant.headers, params=params)
        assert response.status_code == 200, response.text
        return [e["provider_event_id"] for e in response.json()["data"]]

    assert await ids(calendar_id=calendar.id) == ["early", "mid", "late"]
    assert await ids(calendar_id="cal-1") == []  # the provider's id is not ours
    assert await ids(calendar_id=new_id("cal")) == []
    assert await ids(connection_id=calendar.connection_id) == ["early", "mid", "late"]
    assert await ids(connection_id=new_id("conn")) == []
    # since keeps events ending after it (early ends at 09:30), until those starting before it.
    assert await ids(since="2026-03-01T09:15:00Z") == ["early", "mid", "late"]
    assert await ids(since="2026-03-01T09:30:00Z") == ["mid", "late"]
    assert await ids(until="2026-03-01T14:00:00Z") == ["early"]
    assert await ids(since="2026-03-01T10:00:00Z", until="2026-03-01T19:00:01Z") == ["mid", "late"]
    assert await ids(since="2026-03-02") == []


async def test_list_is_scoped_to_the_workspace(
    app_ctx: AppContext, calendar: Calendar, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await apply(app_ctx, calendar, change("mine"))
    other = await make_tenant(app_ctx)
    other_calendar = await connection_with_calendar(app_ctx, other, "microsoft")
    await apply(app_ctx, other_calendar, change("theirs"))
    mine = (await client.get("/v1/calendar/events", headers=tenant.headers)).json()["data"]
    theirs = (await client.get("/v1/calendar/events", headers=other.headers)).json()["data"]
    assert [e["provider_event_id"] for e in mine] == ["mine"]
    assert [(e["provider_event_id"], e["provider"]) for e in theirs] == [("theirs", "microsoft")]
    # Another workspace's calendar or connection id shows nothing.
    for params in ({"calendar_id": other_calendar.id}, {"connection_id": other_calendar.connection_id}):
        assert (await client.get("/v1/calendar/events", headers=tenant.headers, params=params)).json()["data"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-03-02", "until": "2026-03-01"}, "since"),
        ({"since": "2026-03-01T09:00:00"}, "since"),  # no time zone: not guessed as UTC
        ({"until": "2026-03-01T09:00"}, "until"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
        ({"cursor": "%%%"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"calendar_id": "x" * 513}, "calendar_id"),
        ({"connection_id": "x" * 41}, "connection_id"),
    ],
)
async def test_bad_parameters_are_422_naming_the_field(
    client: httpx.AsyncClient, tenant: Tenant, params: dict[str, str], field: str
) -> None:
    response = await client.get("/v1/calendar/events", headers=tenant.headers, params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["message"]


async def test_listing_needs_read_calendar(app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant) -> None:
    writer = await add_key(app_ctx, tenant, scopes=["write:calendar"])
    assert (await client.get("/v1/calendar/events", headers=writer.headers)).status_code == 403
    assert (await client.get("/v1/calendar/events")).status_code == 401
