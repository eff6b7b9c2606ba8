"""Push-channel rows at a chosen state: indexed calendars of a connection and their channels (CONTRACT §7)."""

from __future__ import annotations

from datetime import datetime

from sync_trigger.calendar_index.models import Calendar
from sync_trigger.models import Connection
from sync_trigger.push.models import PushChannel, PushStatus
from synchook.context import AppContext
from synchook.ids import new_id
from synchook.timeutil import utcnow


async def add_calendar(ctx: AppContext, connection: Connection, provider_calendar_id: str) -> Calendar:
    """An indexed calendar of `connection`, synced once."""
    now = utcnow()
    calendar = Calendar(
        id=new_id("cal"),
        workspace_id=connection.workspace_id,
        connection_id=connection.id,
        provider=connection.provider,
        calendar_id=provider_calendar_id,
        name=provider_calendar_id,
        sync_cursor="cursor",
        created_at=now,
        synced_at=now,
    )
    async with ctx.db.session() as session:
        session.add(calendar)
    return calendar


async def add_channel(
    ctx: AppContext,
    calendar: Calendar,
    *,
    status: PushStatus = PushStatus.ACTIVE,
    expires_at: datetime | None = None,
    renew_at: datetime | None = None,
    channel_id: str | None = None,
    resource_id: str | None = None,
    secret: str = "channel-secret",
) -> PushChannel:
    now = utcnow()
    channel = PushChannel(
        calendar_id=calendar.id,
        workspace_id=calendar.workspace_id,
        connection_id=calendar.connection_id,
        provider=calendar.provider,
        status=status,
        channel_id=channel_id or new_id("pch"),
        resource_id=resource_id,
        secret_sealed=ctx.box.seal(secret, context=calendar.id),
        expires_at=expires_at,
        renew_at=renew_at,
        failures=0,
        created_at=now,
        updated_at=now,
    )
    async with ctx.db.session() as session:
        session.add(channel)
    return channel
