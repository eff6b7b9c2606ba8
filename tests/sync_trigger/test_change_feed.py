"""GET /v1/calendar/changes (CONTRACT §6.3) and GET /v1/calendar/calendars, over real HTTP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from sync_trigger.calendar_index.changes import purge_changes
from sync_trigger.calendar_index.models import Calendar
from synchook.context import AppContext
from synchook.ids import new_id
from synchook.timeutil import utcnow
from tests.factories import Tenant, add_key, make_tenant
from tests.sync_trigger.test_calendar_index import apply, change, connection_with_calendar


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


@pytest.fixture
async def calendar(app_ctx: AppContext, tenant: Tenant) -> Calendar:
    return await connection_with_calendar(app_ctx, tenant)


async def get_feed(client: httpx.AsyncClient, tenant: Tenant, **params: Any) -> httpx.Response:
    return await client.get("/v1/calendar/changes", headers=tenant.headers, params=params)


async def read_all(client: httpx.AsyncClient, tenant: Tenant, after: int = 0, **params: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while True:
        response = await get_feed(client, tenant, after=after, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "next_after", "has_more"}
        seen += body["data"]
        after = body["next_after"]
        if not body["has_more"]:
            return seen


async def test_the_feed_returns_every_change_once_in_order_across_pages(
    app_ctx: AppContext, calendar: Calendar, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await apply(app_ctx, calendar, *[change(f"e{n}", hours=n) for n in range(7)])
    await apply(app_ctx, calendar, change("e1", hours=1, summary="Renamed"), change("e2", deleted=True))
    first = (await get_feed(client, tenant, limit=3)).json()
    assert [c["sequence"] for c in first["data"]] == [1, 2, 3]
    assert first["next_after"] == 3 and first["has_more"] is True
    seen = await read_all(client, tenant, limit=3)
    assert [c["sequence"] for c in seen] == list(range(1, 10))
    assert [c["type"] for c in seen] == ["created"] * 7 + ["updated", "deleted"]
    renamed = seen[7]
    assert set(renamed) == {
        "sequence", "type", "occurred_at", "job_id", "connection_id", "calendar_id", "initial", "event",
        "changed_fields", "previous",
    }  # fmt: skip
    assert renamed["changed_fields"] == ["title"] and renamed["previous"] == {"title": "Meeting"}
    assert renamed["calendar_id"] == calendar.id and renamed["event"]["calendar_id"] == calendar.id
    # At the end: nothing more, and the cursor stays.
    end = (await get_feed(client, tenant, after=9)).json()
    assert end == {"data": [], "next_after": 9, "has_more": False}
    # New changes continue after it.
    await apply(app_ctx, calendar, change("new"))
    assert [c["sequence"] for c in await read_all(client, tenant, after=9)] == [10]


async def test_filters_by_connection_and_calendar(
    app_ctx: AppContext, calendar: Calendar, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    other = await connection_with_calendar(app_ctx, tenant, "microsoft")
    await apply(app_ctx, calendar, change("a"))
    await apply(app_ctx, other, change("b"))
    await apply(app_ctx, calendar, change("c"))
    mine = await read_all(client, tenant, calendar_id=calendar.id)
    assert [(c["sequence"], c["event"]["provider_event_id"]) for c in mine] == [(1, "a"), (3, "c")]
    theirs = await read_all(client, tenant, connection_id=other.connection_id)
    assert [(c["sequence"], c["event"]["provider"]) for c in theirs] == [(2, "microsoft")]
    assert await read_all(client, tenant, calendar_id=new_id("cal")) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": "x"}, "after"),
        ({"after": "-1"}, "after"),
        ({"after": "1.5"}, "after"),
        ({"after": "4"}, "after"),  # above the latest sequence (3)
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"calendar_id": "x" * 41}, "calendar_id"),
    ],
)
async def test_bad_parameters_are_422_naming_the_field(
    app_ctx: AppContext,
    calendar: Calendar,
    client: httpx.AsyncClient,
    tenant: Tenant,
    params: dict[str, str],
    field: str,
) -> None:
    await apply(app_ctx, calendar, change("a"), change("b"), change("c"))
    response = await get_feed(client, tenant, **params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and field in error["message"]


async def test_limit_bounds_and_default(
    app_ctx: AppContext, calendar: Calendar, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await apply(app_ctx, calendar, *[change(f"e{n}") for n in range(101)])
    default = (await get_feed(client, tenant)).json()
    assert len(default["data"]) == 100 and default["has_more"] is True
    assert len((await get_feed(client, tenant, limit=1000)).json()["data"]) == 101
    assert (await get_feed(client, tenant, after=101)).json()["data"] == []


async def test_an_empty_workspace_answers_after_zero_only(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert (await get_feed(client, tenant)).json() == {"data": [], "next_after": 0, "has_more": False}
    assert (await get_feed(client, tenant, after=1)).status_code == 422


async def test_workspace_isolation(
    app_ctx: AppContext, calendar: Calendar, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    other = await make_tenant(app_ctx)
    other_calendar = await connection_with_calendar(app_ctx, other)
    await apply(app_ctx, other_calendar, change("theirs"), change("theirs-2"))
    await apply(app_ctx, calendar, change("mine"))
    assert [c["event"]["provider_event_id"] for c in await read_all(client, tenant)] == ["mine"]
    # Their ids filter nothing of ours, and their sequence range is not ours (422).
    assert await read_all(client, tenant, calendar_id=other_calendar.id) == []
    assert await read_all(client, tenant, connection_id=other_calendar.connection_id) == []
    assert (await get_feed(client, tenant, after=2)).status_code == 422
    listed = (await client.get("/v1/calendar/calendars", headers=tenant.headers)).json()["data"]
    assert [c["id"] for c in listed] == [calendar.id]


async def test_retention_purges_changes_and_an_older_cursor_is_410(
    app_ctx: AppContext, calendar: Calendar, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await apply(app_ctx, calendar, change("a"), change("b"))
    later = utcnow() + timedelta(days=31)
    assert await purge_changes(app_ctx.db, retention_days=30, now=later) == 2
    await apply(app_ctx, calendar, change("c"))
    for after in (0, 1):
        response = await get_feed(client, tenant, after=after)
        assert response.status_code == 410, response.text
        error = response.json()["error"]
        assert error["code"] == "cursor_expired" and "GET /v1/calendar/events" in error["message"]
    # A consumer that had read everything purged goes on without a gap.
    assert [c["sequence"] for c in await read_all(client, tenant, after=2)] == [3]
    # Recent changes are kept.
    assert await purge_changes(app_ctx.db, retention_days=30) == 0


async def test_the_feed_needs_read_calendar(app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant) -> None:
    writer = await add_key(app_ctx, tenant, scopes=["write:calendar"])
    for path in ("/v1/calendar/changes", "/v1/calendar/calendars"):
        assert (await client.get(path, headers=writer.headers)).status_code == 403
        assert (await client.get(path)).status_code == 401


async def test_calendars_list_with_cal_ids(
    app_ctx: AppContext, calendar: Calendar, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    other = await connection_with_calendar(app_ctx, tenant, "microsoft")
    await apply(app_ctx, calendar, change("a"), cursor="token")
    listed = (await client.get("/v1/calendar/calendars", headers=tenant.headers)).json()
    assert {c["id"] for c in listed["data"]} == {calendar.id, other.id} and listed["next_cursor"] is None
    params = {"connection_id": calendar.connection_id}
    [only] = (await client.get("/v1/calendar/calendars", headers=tenant.headers, params=params)).json()["data"]
    assert only["id"].startswith("cal_") and only["provider_calendar_id"] == "cal-1"
    assert only["name"] == "Work" and only["provider"] == "google"
    assert only["push"] == {"status": "off", "expires_at": None} and only["synced_at"] is not None
