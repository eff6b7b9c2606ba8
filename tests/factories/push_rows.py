"""Push channel rows (CONTRACT §7) as the channel side stores them: one per calendar, the secret sealed."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sync_trigger import connections
from sync_trigger.calendar_index import service as index
from sync_trigger.calendar_index.models import Calendar
from sync_trigger.connectors import CalendarInfo
from sync_trigger.push.models import PushChannel, PushStatus
from sync_trigger.schemas import OAuthConnectionBody
from synchook.context import AppContext
from synchook.timeutil import utcnow


@dataclass(frozen=True)
class Channel:
    """What a provider's notification carries: the channel (or subscription) id and the secret."""

    calendar_id: str
    provider: str
    channel_id: str
    secret: str


async def make_push_channel(
    ctx: AppContext, calendar: Calendar, *, channel_id: str | None = None, status: str = PushStatus.ACTIVE
) -> Channel:
    channel_id = channel_id or str(uuid.uuid4())
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    async with ctx.db.session() as session:
        session.add(
            PushChannel(
                calendar_id=calendar.id,
                workspace_id=calendar.workspace_id,
                connection_id=calendar.connection_id,
                provider=calendar.provider,
                status=status,
                channel_id=channel_id,
                resource_id="res-" + channel_id[:8] if calendar.provider == "google" else None,
                secret_sealed=ctx.box.seal(secret, context=calendar.id),
                expires_at=now + timedelta(days=7),
                renew_at=now + timedelta(days=6),
                created_at=now,
                updated_at=now,
            )
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
