"""The poll under push (CONTRACT §7): a connection whose calendars are all push-active is polled only every
SYNCHOOK_PUSH_FALLBACK_INTERVAL; pending or failed channels, CalDAV, and push off keep the background interval."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlmodel import col

from sync_trigger import connections, service
from sync_trigger.background import schedule_background_syncs
from sync_trigger.models import Connection, SyncJob, SyncTrigger
from sync_trigger.push.models import PushChannel, PushStatus
from sync_trigger.schemas import CalDAVConnectionBody, OAuthConnectionBody
from synchook.context import AppContext
from synchook.timeutil import utcnow
from tests.factories import make_tenant
from tests.factories.push import add_calendar, add_channel

BACKGROUND = 300
FALLBACK = 3600


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "public_url": "https://hooks.example.com",
        "background_sync_interval": BACKGROUND,
        "push_fallback_interval": FALLBACK,
    }


async def connect(ctx: AppContext, workspace_id: str, provider: str, account: str) -> Connection:
    body: OAuthConnectionBody | CalDAVConnectionBody
    if provider == "caldav":
        body = CalDAVConnectionBody(
            provider="caldav", account=account, server_url="https://dav.example.com", username="u", password="p"
        )
    else:
        body = OAuthConnectionBody(
            provider=provider,  # type: ignore[arg-type]
            account=account,
            access_token="access",
            refresh_token="refresh",
        )
    async with ctx.db.session() as session:
        return await connections.create_connection(session, box=ctx.box, workspace_id=workspace_id, body=body)


async def last_polled(ctx: AppContext, seconds_ago: float) -> None:
    """Every connection's last background sync was that long ago."""
    async with ctx.db.session() as session:
        await session.execute(
            update(Connection).values(
                created_at=utcnow() - timedelta(days=1),
                last_background_sync_at=utcnow() - timedelta(seconds=seconds_ago),
            )
        )


async def polled(ctx: AppContext) -> set[str]:
    """Run the scheduler; the connections it queued a background sync for."""
    await schedule_background_syncs({"app": ctx})
    async with ctx.db.session() as session:
        rows = await session.execute(select(col(SyncJob.connection_id)).where(col(SyncJob.trigger) == "background"))
        found = {row[0] for row in rows}
        await session.execute(update(SyncJob).values(status="completed"))
    return found


@pytest.fixture
async def accounts(app_ctx: AppContext) -> dict[str, Connection]:
    """Connections in every push state: all active, one pending, one failed, no calendar, CalDAV."""
    workspace_id = (await make_tenant(app_ctx)).workspace_id
    made = {}
    for name, provider in [
        ("all_active", "google"),
        ("graph_active", "microsoft"),
        ("one_pending", "google"),
        ("one_failed", "microsoft"),
        ("no_calendars", "google"),
        ("caldav", "caldav"),
    ]:
        made[name] = await connect(app_ctx, workspace_id, provider, f"{name}@example.com")
    later = utcnow() + timedelta(days=2)
    for name, statuses in [
        ("all_active", [PushStatus.ACTIVE, PushStatus.ACTIVE]),
        ("graph_active", [PushStatus.ACTIVE]),
        ("one_pending", [PushStatus.ACTIVE, PushStatus.PENDING]),
        ("one_failed", [PushStatus.ACTIVE, PushStatus.FAILED]),
    ]:
        for i, status in enumerate(statuses):
            calendar = await add_calendar(app_ctx, made[name], f"{name}-{i}")
            await add_channel(app_ctx, calendar, status=status, expires_at=later)
    await add_calendar(app_ctx, made["caldav"], "caldav-0")
    return made


async def test_push_active_connections_wait_for_the_fallback_interval(
    app_ctx: AppContext, accounts: dict[str, Connection]
) -> None:
    ids = {connection.id: name for name, connection in accounts.items()}
    # Past the background interval, within the fallback one: only the push-active are left alone.
    await last_polled(app_ctx, BACKGROUND + 60)
    assert {ids[c] for c in await polled(app_ctx)} == {"one_pending", "one_failed", "no_calendars", "caldav"}
    # Past the fallback interval: everyone.
    await last_polled(app_ctx, FALLBACK + 60)
    assert {ids[c] for c in await polled(app_ctx)} == set(accounts)


async def test_a_calendar_without_a_channel_keeps_its_connection_polled(
    app_ctx: AppContext, accounts: dict[str, Connection]
) -> None:
    # A new calendar (no channel yet) on the all-active connection: it is polled at the normal interval again.
    await add_calendar(app_ctx, accounts["all_active"], "new")
    await last_polled(app_ctx, BACKGROUND + 60)
    assert accounts["all_active"].id in await polled(app_ctx)
    assert accounts["graph_active"].id not in await polled(app_ctx)


async def test_an_expired_channel_no_longer_holds_the_poll_back(
    app_ctx: AppContext, accounts: dict[str, Connection]
) -> None:
    # Its renewal is late (no worker ran): the channel no longer notifies, so the connection is polled again.
    async with app_ctx.db.session() as session:
        await session.execute(
            update(PushChannel)
            .where(col(PushChannel.connection_id) == accounts["graph_active"].id)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    await last_polled(app_ctx, BACKGROUND + 60)
    found = await polled(app_ctx)
    assert accounts["graph_active"].id in found and accounts["all_active"].id not in found


async def test_with_push_off_everyone_is_polled_at_the_background_interval(
    app_ctx: AppContext, accounts: dict[str, Connection]
) -> None:
    app_ctx.settings = app_ctx.settings.model_copy(update={"public_url": None})
    await last_polled(app_ctx, BACKGROUND + 60)
    assert await polled(app_ctx) == {c.id for c in accounts.values()}


async def test_a_fallback_shorter_than_the_background_interval_never_polls_more_often(
    app_ctx: AppContext, accounts: dict[str, Connection]
) -> None:
    app_ctx.settings = app_ctx.settings.model_copy(update={"push_fallback_interval": 10})
    await last_polled(app_ctx, 60)
    assert await polled(app_ctx) == set()


async def test_a_push_sync_of_one_calendar_does_not_hold_back_its_connections_poll(
    app_ctx: AppContext, accounts: dict[str, Connection]
) -> None:
    # A queued push sync of one calendar syncs that calendar alone: the connection's other calendars are still due.
    connection = accounts["one_pending"]
    calendar = await add_calendar(app_ctx, connection, "pushed")
    async with app_ctx.db.session() as session:
        service.add_incremental_job(
            session, connection=connection, trigger=SyncTrigger.PUSH, now=utcnow(), calendar_id=calendar.id
        )
    await last_polled(app_ctx, BACKGROUND + 60)
    assert connection.id in await polled(app_ctx)
