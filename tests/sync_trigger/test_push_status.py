"""`push` on calendars and connections (CONTRACT §4.1, §7): a calendar's channel row, a connection's aggregate."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from sync_trigger import connections
from sync_trigger.models import Connection
from sync_trigger.push.models import PushStatus
from sync_trigger.push.views import aggregate
from sync_trigger.schemas import OAuthConnectionBody
from synchook.context import AppContext
from synchook.timeutil import isoformat, utcnow
from tests.factories import Tenant, make_tenant
from tests.factories.push import add_calendar, add_channel

OFF = {"status": "off", "expires_at": None}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"public_url": "https://hooks.example.com"}


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


async def connect(
    ctx: AppContext, tenant: Tenant, provider: str = "google", account: str = "a@example.com"
) -> Connection:
    body = OAuthConnectionBody(
        provider="google",
        account=account,
        access_token="access",
        refresh_token="refresh",
    )
    async with ctx.db.session() as session:
        return await connections.create_connection(session, box=ctx.box, workspace_id=tenant.workspace_id, body=body)


async def calendars_push(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    answer = await client.get("/v1/calendar/calendars", headers=tenant.headers)
    assert answer.status_code == 200
    return {c["provider_calendar_id"]: c["push"] for c in answer.json()["data"]}


async def connection_push(client: httpx.AsyncClient, tenant: Tenant, connection_id: str) -> Any:
    one = await client.get(f"/v1/calendar/connections/{connection_id}", headers=tenant.headers)
    listed = await client.get("/v1/calendar/connections", headers=tenant.headers)
    [from_list] = [c["push"] for c in listed.json()["data"] if c["id"] == connection_id]
    assert one.json()["data"]["push"] == from_list
    return from_list


async def test_a_calendar_shows_its_channel_and_off_without_one(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    connection = await connect(app_ctx, tenant)
    active, failed, bare = [await add_calendar(app_ctx, connection, name) for name in ("active", "failed", "bare")]
    expires = (utcnow() + timedelta(days=7)).replace(microsecond=0)
    await add_channel(app_ctx, active, status=PushStatus.ACTIVE, expires_at=expires)
    await add_channel(app_ctx, failed, status=PushStatus.FAILED)
    assert await calendars_push(client, tenant) == {
        "active": {"status": "active", "expires_at": isoformat(expires)},
        "failed": {"status": "failed", "expires_at": None},
        "bare": OFF,
    }
    assert bare.id  # a synced calendar without a row yet is off


async def test_a_connection_aggregates_its_calendars(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await client.post(
        "/v1/calendar/connections",
        headers=tenant.headers,
        json={"provider": "microsoft", "account": "b@example.com", "access_token": "a", "refresh_token": "r"},
    )
    assert created.status_code == 201 and created.json()["data"]["push"] == OFF
    connection_id = created.json()["data"]["id"]
    async with app_ctx.db.session() as session:
        connection = await session.get(Connection, connection_id)
    assert connection is not None
    first, second = await add_calendar(app_ctx, connection, "one"), await add_calendar(app_ctx, connection, "two")
    # No channel yet on any calendar: off.
    assert await connection_push(client, tenant, connection_id) == OFF
    soon, later = ((utcnow() + timedelta(days=n)).replace(microsecond=0) for n in (1, 2))
    await add_channel(app_ctx, first, status=PushStatus.ACTIVE, expires_at=later)
    # One active, one still without a channel: pending.
    assert await connection_push(client, tenant, connection_id) == {"status": "pending", "expires_at": isoformat(later)}
    await add_channel(app_ctx, second, status=PushStatus.ACTIVE, expires_at=soon)
    # All active: active, expiring with the first of them.
    assert await connection_push(client, tenant, connection_id) == {"status": "active", "expires_at": isoformat(soon)}


async def test_push_shows_off_when_push_is_disabled(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    connection = await connect(app_ctx, tenant)
    await add_channel(app_ctx, await add_calendar(app_ctx, connection, "cal"), expires_at=utcnow())
    app_ctx.settings = app_ctx.settings.model_copy(update={"public_url": None})
    assert await calendars_push(client, tenant) == {"cal": OFF}
    assert await connection_push(client, tenant, connection.id) == OFF


async def test_lists_read_push_per_page_not_per_row(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for i in range(20):
        connection = await connect(app_ctx, tenant, account=f"u{i}@example.com")
        status = PushStatus.FAILED if i % 2 else PushStatus.ACTIVE
        await add_channel(app_ctx, await add_calendar(app_ctx, connection, f"c{i}"), status=status)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # The route's own statements: the API key's lookup is made once per key and then cached for a moment.
        if "api_keys" not in statement:
            statements.append(statement)

    engine = app_ctx.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        counts = {}
        for path in ("/v1/calendar/connections", "/v1/calendar/calendars"):
            for limit in (1, 20):
                statements.clear()
                page = await client.get(f"{path}?limit={limit}", headers=tenant.headers)
                assert len(page.json()["data"]) == limit
                counts[path, limit] = len(statements)
                if limit == 20:
                    assert sorted(c["push"]["status"] for c in page.json()["data"]) == ["active"] * 10 + ["failed"] * 10
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # A page of twenty costs the same statements as a page of one.
    assert counts["/v1/calendar/connections", 1] == counts["/v1/calendar/connections", 20]
    assert counts["/v1/calendar/calendars", 1] == counts["/v1/calendar/calendars", 20]


N = None
E1 = utcnow()
E2 = E1 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("calendars", "status", "expires_at"),
    [
        ([], "off", None),
        ([(N, N), (N, N)], "off", None),
        ([("active", E2), ("active", E1)], "active", E1),
        ([("active", E2), (N, N)], "pending", E2),
        ([("active", E1), ("pending", N)], "pending", E1),
        ([("active", E1), ("failed", E2), ("pending", N)], "failed", E1),
        ([("failed", N)], "failed", None),
    ],
)
def test_aggregate(calendars: list[Any], status: str, expires_at: Any) -> None:
    view = aggregate(calendars)
    assert (view.status, view.expires_at) == (status, expires_at)
