"""Every query of `calendar_push_channels`: which calendars need a channel, leases, renewals due, what a deleted
connection leaves to stop, and `push` for the API. No provider calls here (those are in `lifecycle`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Result, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from sync_trigger.calendar_index.models import Calendar
from sync_trigger.connectors.base import CalendarInfo
from sync_trigger.models import Connection
from sync_trigger.push.models import PushChannel, PushStatus
from sync_trigger.push.views import PushView, aggregate
from synchook.context import AppContext
from synchook.crypto import SecretBox
from synchook.db import Database
from synchook.providers import Provider
from synchook.reseal import ResealCount, reseal_columns
from synchook.settings import Settings

logger = logging.getLogger(__name__)

# The providers with push (CONTRACT §7); CalDAV calendars are always polled.
PUSH_PROVIDERS: tuple[str, ...] = (Provider.GOOGLE, Provider.MICROSOFT)

# arq task names (sync_trigger.push.tasks): other parts enqueue these by name.
ENSURE_TASK = "push_ensure_channels"  # (connection_id): a channel for each synced calendar without one
RENEW_TASK = "push_renew_channel"  # (calendar_id): renew now (Graph reauthorizationRequired)
RECREATE_TASK = "push_recreate_channel"  # (calendar_id): a new channel (Graph subscriptionRemoved)
STOP_TASK = "push_stop_channels"  # (StopOrder.as_args()): stop a deleted connection's channels

# The provider paths notifications arrive at (the inbound endpoints), under SYNCHOOK_ROOT_PATH.
GOOGLE_NOTIFICATIONS = "/v1/providers/google/notifications"
MICROSOFT_NOTIFICATIONS = "/v1/providers/microsoft/notifications"
MICROSOFT_LIFECYCLE = "/v1/providers/microsoft/lifecycle"


def public_endpoint(settings: Settings, path: str) -> str:
    """Where a provider reaches `path` of ours: SYNCHOOK_PUBLIC_URL, then SYNCHOOK_ROOT_PATH (the app is mounted
    under it), then the path. Only called with push on."""
    if settings.public_url is None:
        raise RuntimeError("push is off (SYNCHOOK_PUBLIC_URL is unset)")
    return f"{settings.public_url}{settings.root_path}{path}"


# --- Creating channels after a sync ----------------------------------------------------------------


def _without_channel(connection_id: str) -> Any:
    # Synced at least once (a round stored its cursor) and no channel row yet.
    return (
        select(col(Calendar.id))
        .outerjoin(PushChannel, col(PushChannel.calendar_id) == col(Calendar.id))
        .where(
            col(Calendar.connection_id) == connection_id,
            col(Calendar.synced_at).is_not(None),
            col(PushChannel.calendar_id).is_(None),
        )
        .order_by(col(Calendar.id))
    )


async def calendars_without_channel(session: AsyncSession, *, connection_id: str) -> list[str]:
    """The connection's synced calendars (cal_ ids) that have no channel yet."""
    return [row[0] for row in await session.execute(_without_channel(connection_id))]


async def after_connection_synced(app: AppContext, connection: Connection) -> None:
    """Called once a connection's calendars synced: queue the creation of the channels its calendars lack.

    Best effort, and never the provider calls themselves (a task does them): the next sync queues it again.
    """
    if not app.settings.push_enabled or connection.provider not in PUSH_PROVIDERS or app.redis is None:
        return
    try:
        async with app.db.session() as session:
            missing = (await session.execute(_without_channel(connection.id).limit(1))).first() is not None
        if missing:
            # One queued task per connection at a time (arq refuses a second job with the same id).
            await app.enqueue(ENSURE_TASK, connection.id, _job_id=f"{ENSURE_TASK}:{connection.id}")
    except Exception as exc:
        logger.warning("push channels for connection %s not queued: %s", connection.id, type(exc).__name__)


# --- Leases and renewals ---------------------------------------------------------------------------


def _rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


async def claim(
    session: AsyncSession, *, calendar_id: str, now: datetime, lease: timedelta, due_by: datetime | None = None
) -> PushChannel | None:
    """Take the lease on an existing channel row (None: no row, another worker holds it, or — with `due_by` — its
    renewal is not due by then)."""
    conditions = [
        col(PushChannel.calendar_id) == calendar_id,
        or_(col(PushChannel.leased_until).is_(None), col(PushChannel.leased_until) < now),
    ]
    if due_by is not None:
        conditions.append(col(PushChannel.renew_at) <= due_by)
    taken = await session.execute(update(PushChannel).where(*conditions).values(leased_until=now + lease))
    if _rowcount(taken) != 1:
        return None
    return (
        await session.execute(
            select(PushChannel)
            .where(col(PushChannel.calendar_id) == calendar_id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()


async def update_channel(session: AsyncSession, *, calendar_id: str, values: dict[str, Any]) -> int:
    """Write a leased row (the lease kept); returns the rows written (0: the calendar went meanwhile)."""
    written = await session.execute(
        update(PushChannel).where(col(PushChannel.calendar_id) == calendar_id).values(**values)
    )
    return _rowcount(written)


async def release(session: AsyncSession, *, calendar_id: str, values: dict[str, Any]) -> int:
    """Store a create/renew outcome and give the lease back; returns the rows written (0: the calendar went)."""
    return await update_channel(session, calendar_id=calendar_id, values={**values, "leased_until": None})


async def due_for_renewal(session: AsyncSession, *, now: datetime, limit: int) -> list[str]:
    """Calendars whose channel is due: renewal (active), a retry (failed), or a create whose worker died
    (pending, its lease run out); oldest first. Uses the (status, renew_at) index."""
    rows = await session.execute(
        select(col(PushChannel.calendar_id))
        .where(
            col(PushChannel.status).in_((PushStatus.ACTIVE, PushStatus.FAILED, PushStatus.PENDING)),
            col(PushChannel.renew_at) <= now,
            or_(col(PushChannel.leased_until).is_(None), col(PushChannel.leased_until) < now),
        )
        .order_by(col(PushChannel.renew_at))
        .limit(limit)
    )
    return [row[0] for row in rows]


# --- A deleted connection's channels ---------------------------------------------------------------


@dataclass(frozen=True)
class StopOrder:
    """What stopping a deleted connection's channels takes, collected before the rows cascade away.

    The tokens stay sealed (context = the connection id): the queue never holds a plaintext token or a channel
    secret (stopping needs none).
    """

    connection_id: str
    provider: str
    access_token_sealed: str
    refresh_token_sealed: str
    token_expires_at: str | None  # ISO 8601
    channels: tuple[tuple[str, str | None], ...]  # (channel id, Google resource id)

    def __repr__(self) -> str:
        return f"StopOrder(connection_id={self.connection_id!r}, channels={len(self.channels)})"

    def as_args(self) -> tuple[Any, ...]:
        """The task's arguments: plain JSON values."""
        return (
            self.connection_id,
            self.provider,
            self.access_token_sealed,
            self.refresh_token_sealed,
            self.token_expires_at,
            [list(channel) for channel in self.channels],
        )


async def stop_order(session: AsyncSession, *, connection: Connection) -> StopOrder | None:
    """In the deleting transaction, before the delete: the connection's live channels (None: nothing to stop)."""
    if connection.provider not in PUSH_PROVIDERS:
        return None
    rows = await session.execute(
        select(col(PushChannel.channel_id), col(PushChannel.resource_id)).where(
            col(PushChannel.connection_id) == connection.id,
            col(PushChannel.workspace_id) == connection.workspace_id,
            col(PushChannel.channel_id).is_not(None),
        )
    )
    return _order(connection, tuple((str(channel_id), resource_id) for channel_id, resource_id in rows))


def _order(connection: Connection, channels: tuple[tuple[str, str | None], ...]) -> StopOrder | None:
    if not channels:
        return None
    expires = connection.token_expires_at
    return StopOrder(
        connection_id=connection.id,
        provider=connection.provider,
        access_token_sealed=connection.access_token_sealed,
        refresh_token_sealed=connection.refresh_token_sealed,
        token_expires_at=expires.isoformat() if expires is not None else None,
        channels=channels,
    )


async def vanished_channels(
    db: Database, *, connection: Connection, listed: Sequence[CalendarInfo]
) -> StopOrder | None:
    """Before a sync drops the calendars the provider no longer lists (their rows cascade): their channels."""
    if connection.provider not in PUSH_PROVIDERS:
        return None
    wanted = {c.id for c in listed if not c.deleted}
    async with db.session() as session:
        rows = await session.execute(
            select(col(Calendar.calendar_id), col(PushChannel.channel_id), col(PushChannel.resource_id))
            .join(PushChannel, col(PushChannel.calendar_id) == col(Calendar.id))
            .where(col(Calendar.connection_id) == connection.id, col(PushChannel.channel_id).is_not(None))
        )
        gone = tuple(
            (str(channel_id), resource_id) for calendar, channel_id, resource_id in rows if calendar not in wanted
        )
    return _order(connection, gone)


async def queue_stop(app: AppContext, order: StopOrder | None) -> None:
    """After the delete committed. Best effort: a channel not stopped expires at the provider (Graph within 3
    days, Google within 7) and its notifications meanwhile match no channel and change nothing."""
    if order is None or app.redis is None:
        return
    try:
        await app.enqueue(STOP_TASK, *order.as_args())
    except Exception as exc:
        logger.warning(
            "push channels of deleted connection %s not stopped: %s", order.connection_id, type(exc).__name__
        )


# --- `push` in API responses -----------------------------------------------------------------------


async def calendar_push(session: AsyncSession, *, settings: Settings, calendar_ids: list[str]) -> dict[str, PushView]:
    """`push` of each listed calendar (one query for the page); calendars without a channel are off."""
    if not settings.push_enabled or not calendar_ids:
        return {}
    rows = await session.execute(select(PushChannel).where(col(PushChannel.calendar_id).in_(calendar_ids)))
    return {channel.calendar_id: PushView.of(channel) for channel in rows.scalars()}


async def connection_push(
    session: AsyncSession, *, settings: Settings, connections: list[Connection]
) -> dict[str, PushView]:
    """`push` of each listed connection, aggregated over its calendars (one query for the page)."""
    ids = [c.id for c in connections if c.provider in PUSH_PROVIDERS]
    if not settings.push_enabled or not ids:
        return {}
    rows = await session.execute(
        select(col(Calendar.connection_id), col(PushChannel.status), col(PushChannel.expires_at))
        .outerjoin(PushChannel, col(PushChannel.calendar_id) == col(Calendar.id))
        .where(col(Calendar.connection_id).in_(ids))
    )
    per_connection: dict[str, list[tuple[str | None, datetime | None]]] = {}
    for connection_id, status, expires_at in rows:
        per_connection.setdefault(connection_id, []).append((status, expires_at))
    return {connection_id: aggregate(calendars) for connection_id, calendars in per_connection.items()}


def push_of(views: dict[str, PushView], key: str) -> PushView:
    return views.get(key) or PushView.off()


# --- Secrets ---------------------------------------------------------------------------------------


async def reseal_channel_secrets(db: Database, box: SecretBox) -> ResealCount:
    """Re-encrypt every channel secret under the newest master key (sealed with the calendar id as context)."""
    table = PushChannel.__table__  # type: ignore[attr-defined]
    return await reseal_columns(db, box, table, ("secret_sealed",), key="calendar_id")
