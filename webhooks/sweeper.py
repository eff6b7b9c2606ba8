"""At least once: re-enqueue open deliveries that are overdue and not leased.

Covers every way a queued job can vanish: Redis flushed or restarted, an enqueue that failed after
commit, a worker killed mid-batch (its lease runs out, then the rows are overdue and free). A row
that still has its job in the queue may be enqueued twice; the claim makes the second job a no-op.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa

from synchook.context import AppContext
from synchook.timeutil import utcnow
from webhooks.engine import schedule_deliveries
from webhooks.models import OPEN_STATUSES, Delivery

__all__ = ["sweep_deliveries"]

logger = logging.getLogger(__name__)

_deliveries = Delivery.__table__  # type: ignore[attr-defined]
# Bounded per run: a big legitimate backlog is already queued, re-enqueueing all of it would only duplicate.
MAX_BATCHES_PER_SWEEP = 20


async def sweep_deliveries(app: AppContext) -> int:
    """Enqueue overdue, unleased open deliveries (oldest due first); returns how many."""
    now = utcnow()
    cutoff = now - timedelta(seconds=app.settings.relay_grace_seconds)
    limit = app.settings.delivery_batch_size * MAX_BATCHES_PER_SWEEP
    async with app.db.session() as session:
        rows = await session.execute(
            sa.select(_deliveries.c.id)
            .where(
                _deliveries.c.status.in_(OPEN_STATUSES),
                _deliveries.c.next_attempt_at <= cutoff,
                sa.or_(_deliveries.c.lease_until.is_(None), _deliveries.c.lease_until < now),
            )
            .order_by(_deliveries.c.next_attempt_at)
            .limit(limit)
        )
        ids = [r[0] for r in rows]
    if ids:
        await schedule_deliveries(app, ids)
        logger.info("sweeper re-enqueued %d overdue deliveries", len(ids))
    return len(ids)
