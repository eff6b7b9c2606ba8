"""Schedule: enqueue deliver jobs for due deliveries, and after each commit of outcomes, what it left to do.

After a commit: retries go out as one deferred job per due-time bucket, the outbox events it recorded
(``webhook.subscription.disabled``) are handed to the relay, and the outcomes are counted in metrics.
Enqueueing is best effort throughout: a job that never made it is made up for by the sweeper.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence

from synchook import metrics as _metrics
from synchook.context import AppContext
from synchook.outbox import hand_off
from synchook.queue import enqueue_many
from webhooks.constants import DELIVER_TASK
from webhooks.delivery.stages import Recorded, Scheduled

__all__ = ["schedule_deliveries", "schedule_due", "schedule_recorded"]

logger = logging.getLogger(__name__)

# Retries due within this much of each other share one deferred job.
_RETRY_BUCKET = 0.05


async def schedule_deliveries(app: AppContext, delivery_ids: Sequence[str], *, defer_by: float = 0.0) -> int:
    """Enqueue DELIVER_TASK jobs for these ids in batches; best effort (the sweeper repairs a failure)."""
    if app.redis is None:
        return 0  # the CLI without a Redis: the rows are due, the sweeper enqueues them (no warning to print)
    ids = list(dict.fromkeys(delivery_ids))
    size = app.settings.delivery_batch_size
    jobs = [(ids[start : start + size],) for start in range(0, len(ids), size)]
    try:
        # All the batches in one round trip (arq's enqueue_job takes three per job).
        await enqueue_many(app.redis, DELIVER_TASK, jobs, defer_by=defer_by)
    except Exception as exc:
        logger.warning("could not enqueue %d deliveries, the sweeper will: %s", len(ids), type(exc).__name__)
        return 0
    return len(jobs)


async def schedule_due(app: AppContext, due_in: Mapping[str, float]) -> int:
    """Enqueue deliveries due later (``delivery id: seconds``): one deferred job per due-time bucket, deferred to
    the latest member so none runs early. Returns the jobs enqueued."""
    buckets: dict[float, list[str]] = defaultdict(list)
    for delivery_id, delay in due_in.items():
        width = _RETRY_BUCKET if delay < 5 else 1.0 if delay < 600 else 10.0
        buckets[(int(delay / width) + 1) * width].append(delivery_id)
    jobs = 0
    for due, ids in sorted(buckets.items()):
        jobs += await schedule_deliveries(app, ids, defer_by=due + 0.01)
    return jobs


async def schedule_recorded(app: AppContext, recorded: Recorded) -> Scheduled:
    """After commit: hand off the events recorded, enqueue the retries, count the outcomes."""
    handed_off = False
    if recorded.events:
        handed_off = await hand_off(app.enqueue if app.redis is not None else None, recorded.events)
    jobs = await schedule_due(app, recorded.retries)
    for outcome, count in recorded.outcomes.items():
        _metrics.record_delivery_outcome(outcome, count)
    return Scheduled(jobs, handed_off)
