"""Continuous background sync: a cron tick queues an incremental sync for each connection that is due.

A connection is due when it is active, its last background sync was queued more than
`background_sync_interval` seconds ago (never: it was connected that long ago), and no queued or running
job covers it. A newly connected account waits one interval for its first one: right after connecting, the
caller syncs on demand, and a second job seconds later (with "events_created": 0) only confuses.
Background jobs carry trigger=SyncTrigger.BACKGROUND, so they never count against the on-demand cap.
A connection every calendar of which is on an active push channel (CONTRACT §7) is polled only every
`push_fallback_interval` seconds (providers do not promise delivery); CalDAV, and calendars whose channel is
pending or failed, keep the normal interval.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from arq import cron
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from sync_trigger import service
from sync_trigger.calendar_index.models import Calendar
from sync_trigger.models import ACTIVE_STATUSES, Connection, ConnectionStatus, SyncJob, SyncTrigger
from sync_trigger.push.models import PushChannel, PushStatus
from sync_trigger.push.service import PUSH_PROVIDERS
from synchook.context import AppContext
from synchook.outbox import hand_off
from synchook.settings import Settings
from synchook.timeutil import utcnow

logger = logging.getLogger(__name__)

TICK_SECONDS = 10
# Connections considered per tick; the rest are due on the next tick (oldest first, so none starves).
BATCH = 200


async def schedule_background_syncs(ctx: dict[str, Any]) -> int:
    """Queue the due background syncs; returns how many were queued."""
    app: AppContext = ctx["app"]
    interval = app.settings.background_sync_interval
    if interval <= 0:
        return 0
    cutoff = _cutoffs(app.settings)
    async with app.db.session() as session:
        candidates = [
            row[0]
            for row in await session.execute(
                select(col(Connection.id))
                .where(col(Connection.status) == ConnectionStatus.ACTIVE, _due(cutoff))
                .order_by(_last_background_sync())
                .limit(BATCH)
            )
        ]
    queued = 0
    for connection_id in candidates:
        job_id = await queue_background_sync(app, connection_id=connection_id, cutoff=cutoff)
        if job_id is not None:
            queued += 1
    if queued:
        logger.info("queued %d background sync(s)", queued)
    return queued


@dataclass(frozen=True)
class Cutoffs:
    """A connection is due when its last background sync is older than `polled`, or — every calendar of it on an
    active, unexpired push channel at `now` — older than `pushed` (None: push off)."""

    polled: datetime
    pushed: datetime | None = None
    now: datetime | None = None


def _cutoffs(settings: Settings) -> Cutoffs:
    now = utcnow()
    polled = now - timedelta(seconds=settings.background_sync_interval)
    if not settings.push_enabled:
        return Cutoffs(polled)
    # Push never makes a connection polled more often than without it.
    fallback = max(settings.push_fallback_interval, settings.background_sync_interval)
    return Cutoffs(polled, now - timedelta(seconds=fallback), now)


async def queue_background_sync(app: AppContext, *, connection_id: str, cutoff: datetime | Cutoffs) -> str | None:
    """One connection: job + calendar.sync.queued event in one transaction, then hand off and enqueue."""
    async with app.db.session() as session:
        # Re-checked under the connection's row lock: another scheduler (or a racing tick) may have queued it.
        connection = (
            await session.execute(
                select(Connection)
                .where(
                    col(Connection.id) == connection_id, col(Connection.status) == ConnectionStatus.ACTIVE, _due(cutoff)
                )
                .with_for_update()
            )
        ).scalar_one_or_none()
        if connection is None or await _covered(session, connection):
            return None
        now = utcnow()
        job, event_id = service.add_incremental_job(
            session, connection=connection, trigger=SyncTrigger.BACKGROUND, now=now
        )
        connection.last_background_sync_at = now
    await hand_off(app.enqueue, [event_id])
    await service.enqueue_job_run(app.enqueue, job.id)
    return job.id


def _last_background_sync() -> Any:
    return func.coalesce(col(Connection.last_background_sync_at), col(Connection.created_at))


def _due(cutoff: datetime | Cutoffs) -> Any:
    if isinstance(cutoff, datetime):
        cutoff = Cutoffs(cutoff)
    due = _last_background_sync() < cutoff.polled
    if cutoff.pushed is None:
        return due
    # Push-active: a push provider's connection with calendars, every one of them on an active channel that has not
    # expired (renewal late, e.g. no worker ran: polling must not wait on a channel that no longer notifies).
    calendars = select(col(Calendar.id)).where(col(Calendar.connection_id) == col(Connection.id))
    live = (col(PushChannel.status) == PushStatus.ACTIVE) & (col(PushChannel.expires_at) > (cutoff.now or utcnow()))
    unpushed = (
        select(col(Calendar.id))
        .outerjoin(PushChannel, (col(PushChannel.calendar_id) == col(Calendar.id)) & live)
        .where(col(Calendar.connection_id) == col(Connection.id), col(PushChannel.calendar_id).is_(None))
    )
    push_active = and_(col(Connection.provider).in_(PUSH_PROVIDERS), exists(calendars), ~exists(unpushed))
    return and_(due, or_(~push_active, _last_background_sync() < cutoff.pushed))


async def _covered(session: AsyncSession, connection: Connection) -> bool:
    # A queued or running job of the workspace that would sync this connection: its own background job,
    # or an on-demand job for every provider or for this one. Not a push sync: it syncs one calendar alone.
    query = select(col(SyncJob.id)).where(
        col(SyncJob.workspace_id) == connection.workspace_id,
        col(SyncJob.status).in_(ACTIVE_STATUSES),
        col(SyncJob.calendar_id).is_(None),
        or_(
            col(SyncJob.connection_id) == connection.id,
            (col(SyncJob.connection_id).is_(None))
            & (col(SyncJob.provider).is_(None) | (col(SyncJob.provider) == connection.provider)),
        ),
    )
    return (await session.execute(query.limit(1))).first() is not None


def background_cron_jobs(settings: Settings) -> list[Any]:
    """The scheduler's cron, every 10 s; none when background sync is off."""
    if settings.background_sync_interval <= 0:
        return []
    return [
        cron(
            schedule_background_syncs,
            second=set(range(0, 60, TICK_SECONDS)),
            run_at_startup=True,
            unique=True,
            timeout=60,
        )
    ]
