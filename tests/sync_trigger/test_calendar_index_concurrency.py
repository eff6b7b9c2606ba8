"""Regression (found by the cluster test): concurrent syncs of one connection on several workers both
inserted a new calendar's row, and one job failed on the unique constraint."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlmodel import col

from sync_trigger.calendar_index import service
from sync_trigger.calendar_index.models import Calendar
from sync_trigger.connectors import CalendarInfo
from sync_trigger.models import Connection
from synchook.context import AppContext
from synchook.crypto import Sealed
from synchook.ids import new_id
from synchook.timeutil import utcnow
from tests.factories import make_tenant


async def test_concurrent_calendar_listings_of_one_connection_insert_each_calendar_once(app_ctx: AppContext) -> None:
    tenant = await make_tenant(app_ctx)
    connection = Connection(
        id=new_id("conn"),
        workspace_id=tenant.workspace_id,
        provider="google",
        account="race@example.com",
        access_token_sealed=Sealed("x"),
        refresh_token_sealed=Sealed("x"),
        created_at=utcnow(),
    )
    async with app_ctx.db.session() as session:
        session.add(connection)
    listed = [CalendarInfo("primary", "Primary"), CalendarInfo("cal-1", "Team")]

    results = await asyncio.gather(
        *(service.sync_calendars(app_ctx.db, connection=connection, calendars=listed) for _ in range(6))
    )

    async with app_ctx.db.session() as session:
        rows = (await session.execute(select(Calendar).where(col(Calendar.connection_id) == connection.id))).scalars()
        stored = {row.calendar_id: row.id for row in rows}
    assert sorted(stored) == ["cal-1", "primary"]
    for calendars, removed in results:
        assert removed == service.IndexCounts()
        assert {c.calendar_id: c.id for c in calendars} == stored
