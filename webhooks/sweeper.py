"""At least once: re-enqueue open deliveries that are overdue and not leased.

Covers every way a queued job can vanish: Redis flushed or restarted, an enqueue that failed after
commit, a worker killed mid-batch (its lease runs out, then the rows are overdue and free). A row
that still has its job in the queue may be enqueued twice; the claim makes the second job a no-op.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from synchook.context import AppContext
from synchook.queue import waiting_due_jobs
from synchook.timeutil import utcnow
from webhooks.delivery.schedule import schedule_deliveries
from webhooks.models import DUE_INDEX_WHERE, OPEN_STATUSES, Delivery

__all__ = ["sweep_deliveries"]

logger = logging.getLogger(__name__)

_deliveries = Delivery.__table__  # type: ignore[attr-defined]
# Bounded per run: a big legitimate backlog is already queued, re-enqueueing all of it would only duplicate.
MAX_BATCHES_PER_SWEEP = 20
# Due jobs looked at to decide whether the queue is busy: enough to see past the head, bounded per sweep.
BUSY_SAMPLE = 200


async def sweep_deliveries(app: AppContext) -> int:
    """Enqueue overdue, unleased open deliveries (oldest due first); returns how many."""
    if await _queue_is_busy(app):
        # Workers are behind on jobs already due: anything lost will be found once they catch up,
        # and re-enqueueing a backlog now would only add duplicate jobs to it.
        return 0
    now = utcnow()
    cutoff = now - timedelta(seconds=app.settings.relay_grace_seconds)
    limit = app.settings.delivery_batch_size * MAX_BATCHES_PER_SWEEP
    found: list[tuple[datetime, str]] = []
    async with app.db.session() as session:
        # One query per status, each walking ix_deliveries_due in order: `status IN (…) ORDER BY`
        # would sort every overdue row (the whole backlog) on each sweep.
        for status in OPEN_STATUSES:
            rows = await session.execute(
                sa.select(_deliveries.c.next_attempt_at, _deliveries.c.id)
                .where(
                    # The due index holds only some statuses: the planners use it for a query that shows it the
                    # index's own term (SQLite) or the status itself, not a parameter (PostgreSQL's generic plans).
                    sa.text(DUE_INDEX_WHERE),
                    _deliveries.c.status == sa.literal(status, literal_execute=True),
                    _deliveries.c.next_attempt_at <= cutoff,
                    # A lease that ran out only just now may be a worker's whose outcomes are about to land
                    # (the database just came back): give its recorder the same grace before sending again.
                    sa.or_(_deliveries.c.lease_until.is_(None), _deliveries.c.lease_until < cutoff),
                )
                .order_by(_deliveries.c.next_attempt_at)
                .limit(limit)
            )
            found.extend((r[0], r[1]) for r in rows)
    ids = [delivery_id for _, delivery_id in sorted(found)[:limit]]
    if ids:
        await schedule_deliveries(app, ids)
        logger.info("sweeper re-enqueued %d overdue deliveries", len(ids))
    return len(ids)


async def _queue_is_busy(app: AppContext) -> bool:
    """True when more jobs wait for a worker than one sweep would add.

    Jobs in progress do not count: a killed worker's stay due until the janitor frees them, and while
    they counted, a few kills kept the sweeper from ever running again.
    """
    if app.redis is None:
        return False
    try:
        waiting = await waiting_due_jobs(app.redis, sample=BUSY_SAMPLE)
    except Exception:
        return False
    return waiting > MAX_BATCHES_PER_SWEEP
