"""Push-channel rows at a chosen state: indexed calendars of a connection and their channels (CONTRACT §7)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sync_trigger import connections
from sync_trigger.calendar_index import service as index
from sync_trigger.calendar_index.models import Calendar
from sync_trigger.connectors import CalendarInfo
from sync_trigger.models import Connection
from sync_trigger.push.models import PushChannel, PushStatus
from sync_trigger.schemas import OAuthConnectionBody
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


@dataclass(frozen=True)
class Channel:
    """What a provider's notification carries: the channel (or subscription) id and the secret."""

    calendar_id: str
    provider: str
    channel_id: str
    secret: str


async def make_push_channel(
    ctx: AppContext, calendar: Calendar, *, channel_id: str | None = None, status: PushStatus = PushStatus.ACTIVE
) -> Channel:
    """A channel whose notifications a test can forge or send genuinely: its id and plaintext secret."""
    channel_id = channel_id or str(uuid.uuid4())
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    await add_channel(
        ctx,
        calendar,
        status=status,
        channel_id=channel_id,
        resource_id="res-" + channel_id[:8] if calendar.provider == "google" else None,
        secret=secret,
        expires_at=now + timedelta(days=7),
        renew_at=now + timedelta(days=6),
    )
    return Channel(calendar.id, calendar.provider, channel_id, secret)


async def make_indexed_calendars(
    ctx: AppContext, workspace_id: str, provider: str, *, count: int = 1, account: str = "alice@example.com"
) -> list[Calendar]:
    """A connection (tokens no provider knows) with `count` indexed calendars, without any sync."""
    body = OAuthConnectionBody(
        provider=provider,  # type: ignore[arg-type]
        account=account,
        access_token="at-" + secrets.token_hex(4),
        refresh_token="rt-" + secrets.token_hex(4),
    )
    async with ctx.db.session() as session:
        connection = await connections.create_connection(session, box=ctx.box, workspace_id=workspace_id, body=body)
    infos = [CalendarInfo(f"cal-{n}", f"Calendar {n}") for n in range(count)]
    calendars, _ = await index.sync_calendars(ctx.db, connection=connection, calendars=infos)
    return list(calendars)
