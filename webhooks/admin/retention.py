"""Retention: finished deliveries (and their attempts) older than ``retention_days`` go, then the events
left with no delivery. Small batches, one transaction each, so the purge never holds long locks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from synchook.db import Database
from synchook.outbox import Event
from synchook.timeutil import utcnow
from webhooks.admin.queries import id_bound
from webhooks.models import OPEN_STATUSES, Delivery, DeliveryAttempt

__all__ = ["Purged", "purge_expired"]

logger = logging.getLogger(__name__)

PURGE_BATCH = 1000
_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_attempts = DeliveryAttempt.__table__  # type: ignore[attr-defined]
_events = Event.__table__  # type: ignore[attr-defined]


@dataclass(slots=True)
class Purged:
    deliveries: int = 0
    attempts: int = 0
    events: int = 0


async def purge_expired(
    db: Database, *, retention_days: int, now: datetime | None = None, batch_size: int = PURGE_BATCH
) -> Purged:
    """Delete what is older than the retention period; open deliveries (pending, failed) are kept."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    purged = Purged()
    # Ids encode their creation time: a primary-key range scan finds the old rows (deliveries keep no index on
    # created_at, one entry less written for each of their writes).
    deliveries_before = id_bound("dlv", cutoff)
    while True:
        async with db.session() as session:
            ids = [
                row[0]
                for row in await session.execute(
                    sa.select(_deliveries.c.id)
                    .where(_deliveries.c.id < deliveries_before, _deliveries.c.status.not_in(OPEN_STATUSES))
                    .order_by(_deliveries.c.id)
                    .limit(batch_size)
                )
            ]
            if ids:
                # The deliveries first, then their attempts in a later statement (a later snapshot): an attempt
                # recorded while the delete waited on its row's lock goes too (no foreign key would refuse it).
                deleted = [
                    row[0]
                    for row in await session.execute(
                        sa.delete(_deliveries)
                        .where(_deliveries.c.id.in_(ids), _deliveries.c.status.not_in(OPEN_STATUSES))
                        .returning(_deliveries.c.id)
                    )
                ]
                purged.deliveries += len(deleted)
                if deleted:
                    result = await session.execute(sa.delete(_attempts).where(_attempts.c.delivery_id.in_(deleted)))
                    purged.attempts += int(getattr(result, "rowcount", 0) or 0)
        if len(ids) < batch_size:
            break
    bound = id_bound("evt", cutoff)
    while True:
        async with db.session() as session:
            orphaned = (
                sa.select(_events.c.id)
                .where(
                    _events.c.id < bound,
                    _events.c.dispatched_at.is_not(None),  # an undispatched event is still owed its deliveries
                    ~sa.exists().where(_deliveries.c.event_id == _events.c.id),
                )
                .order_by(_events.c.id)
                .limit(batch_size)
            )
            # Locked, then deleted by a later statement that checks again: a replay that adds deliveries to an old
            # event holds it in KEY SHARE (webhooks.admin.replays), so either its deliveries are committed and seen
            # here, or it waits and finds the event gone. One checked in the same statement would miss a replay
            # committed while the delete waited (its snapshot is older), and no foreign key refuses the orphan.
            event_ids = [row[0] for row in await session.execute(orphaned.with_for_update(skip_locked=True))]
            if event_ids:
                result = await session.execute(
                    sa.delete(_events).where(
                        _events.c.id.in_(event_ids), ~sa.exists().where(_deliveries.c.event_id == _events.c.id)
                    )
                )
                purged.events += int(getattr(result, "rowcount", 0) or 0)
        if len(event_ids) < batch_size:
            break
    if purged.deliveries or purged.events:
        logger.info(
            "retention: purged %d deliveries, %d attempts, %d events older than %d days",
            purged.deliveries,
            purged.attempts,
            purged.events,
            retention_days,
        )
    return purged
