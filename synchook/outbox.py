"""The outbox: lifecycle events written in the same transaction as the state change that caused them.

Domain code calls `record_event` inside its unit of work; after commit the ids are handed to the
queue (`hand_off`). A relay task gives each event to the registered dispatcher, which marks it
dispatched in its own transaction, so every event is handed to the delivery side exactly once
even when Redis was down at commit time (the sweeper finds undispatched events).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Column, Index, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from synchook.db import UTCDateTime
from synchook.ids import new_id
from synchook.timeutil import utcnow

logger = logging.getLogger(__name__)

RELAY_TASK = "relay_events"


class Event(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_workspace_id_id", "workspace_id", "id"),
        Index("ix_events_undispatched", "dispatched_at", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(max_length=40, foreign_key="workspaces.id")
    type: str = Field(max_length=100)
    provider: str | None = Field(default=None, max_length=20)
    # When set, the event is for that one subscription only (webhook.test, targeted replays).
    target_subscription_id: str | None = Field(default=None, max_length=40)
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    dispatched_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))


def record_event(
    session: AsyncSession,
    *,
    workspace_id: str,
    type: str,
    data: dict[str, Any],
    provider: str | None = None,
    target_subscription_id: str | None = None,
    at: datetime | None = None,
) -> Event:
    """Add an event to the caller's unit of work; it is committed (or not) with the state change."""
    event = Event(
        id=new_id("evt"),
        workspace_id=workspace_id,
        type=type,
        provider=provider,
        target_subscription_id=target_subscription_id,
        data=data,
        created_at=at or utcnow(),
    )
    session.add(event)
    return event


Enqueue = Callable[..., Awaitable[Any]]
Dispatcher = Callable[[Sequence[str]], Awaitable[int]]


async def hand_off(enqueue: Enqueue | None, event_ids: Sequence[str]) -> bool:
    """Best effort after commit: a failure here is repaired by the relay sweeper, never lost."""
    if not event_ids or enqueue is None:
        return False
    try:
        await enqueue(RELAY_TASK, list(event_ids))
        return True
    except Exception as exc:  # Redis down: the sweeper picks the events up later.
        logger.warning("outbox hand-off deferred to the sweeper: %s", type(exc).__name__)
        return False


async def undispatched_event_ids(session: AsyncSession, *, older_than: timedelta, limit: int = 1000) -> list[str]:
    cutoff = utcnow() - older_than
    rows = await session.execute(
        select(Event.id)  # type: ignore[call-overload]
        .where(Event.dispatched_at.is_(None), Event.created_at <= cutoff)  # type: ignore[union-attr]
        .order_by(Event.created_at)
        .limit(limit)
    )
    return [r[0] for r in rows]
