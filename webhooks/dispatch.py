"""Fan-out: each outbox event becomes one delivery row per matching subscription, then ids go to the queue.

One transaction claims the events (``dispatched_at`` set only where still NULL, so concurrent relays
and sweepers hand each event out exactly once) and inserts all their deliveries; only after commit
are jobs enqueued. A failed enqueue loses nothing: the delivery sweeper finds due rows.

On a worker (given its ``WorkerContext``) the first batch skips the queue: those rows are inserted
already leased, and after commit this job sends them itself with the bodies and subscriptions it
holds. That saves a queue hop, a claim transaction and a reload per event on the latency path. If
the job dies, the lease runs out and the sweeper re-enqueues the rows, as for any deliver job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from subscriptions.models import Subscription, SubscriptionStatus
from synchook.bulk import insert_rows
from synchook.context import AppContext
from synchook.db import among, unindexed
from synchook.outbox import Event
from synchook.timeutil import utcnow
from webhooks.delivery.lease import Lease
from webhooks.delivery.pipeline import run
from webhooks.delivery.rows import disabled_cancel_reason, new_delivery
from webhooks.delivery.runtime import WorkerContext
from webhooks.delivery.schedule import schedule_deliveries
from webhooks.delivery.stages import Batch, Body, Claimed
from webhooks.health import SUBSCRIPTION_DISABLED_EVENT
from webhooks.models import Delivery

__all__ = ["dispatch_events"]

logger = logging.getLogger(__name__)

_events = Event.__table__  # type: ignore[attr-defined]
_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_CLAIM_CHUNK = 500

MatchKey = tuple[str, str, str | None, str | None]


async def dispatch_events(app: AppContext, event_ids: Sequence[str], *, worker: WorkerContext | None) -> int:
    """Create the deliveries of these events (those not yet dispatched) and enqueue them; returns events claimed.

    With a ``worker`` (on a worker process) the first batch is sent by this call instead; without (no
    worker at hand: the CLI, tests) every delivery goes to the queue.
    """
    from subscriptions.matching import in_scope, match_subscriptions

    ids = list(dict.fromkeys(event_ids))
    if not ids:
        return 0
    now = utcnow()
    lease = Lease(now + timedelta(seconds=app.settings.delivery_lease_seconds), [])
    inline_limit = app.settings.delivery_batch_size if worker is not None else 0
    clock = time.monotonic()
    rows: list[dict[str, Any]] = []
    inline: list[Claimed] = []
    bodies: dict[str, Body] = {}
    held: dict[str, Subscription] = {}
    claimed = 0
    async with app.db.session() as session:
        events: list[Any] = []
        for start in range(0, len(ids), _CLAIM_CHUNK):
            result = await session.execute(
                sa.update(_events)
                .where(
                    among(_events.c.id, ids[start : start + _CLAIM_CHUNK]), unindexed(_events.c.dispatched_at).is_(None)
                )
                .values(dispatched_at=now)
                .returning(
                    _events.c.id,
                    _events.c.workspace_id,
                    _events.c.type,
                    _events.c.provider,
                    _events.c.target_subscription_id,
                    _events.c.data,
                    _events.c.created_at,
                )
            )
            events.extend(result.all())
        claimed = len(events)
        # A batch of lifecycle events mostly shares a few (workspace, type, provider) keys: match each once.
        matches: dict[MatchKey, list[Subscription]] = {}
        for event_id, workspace_id, event_type, provider, target, data, created_at in sorted(events):
            key: MatchKey = (workspace_id, event_type, provider, target)
            subscriptions = matches.get(key)
            if subscriptions is None:
                subscriptions = await match_subscriptions(
                    session,
                    workspace_id=workspace_id,
                    event_type=event_type,
                    provider=provider,
                    target_subscription_id=target,
                )
                matches[key] = subscriptions
            # A subscription is never told about its own disabling: it is the one endpoint known not to listen.
            skip = data.get("subscription_id") if event_type == SUBSCRIPTION_DISABLED_EVENT else None
            for subscription in subscriptions:
                if subscription.id == skip or subscription.workspace_id != workspace_id:
                    continue
                if target is None and not in_scope(subscription, event_type, data):
                    continue
                row = new_delivery(
                    workspace_id=workspace_id,
                    event_id=event_id,
                    event_type=event_type,
                    subscription_id=subscription.id,
                    now=now,
                    # A disabled subscription still gets its rows, cancelled, for a later replay.
                    cancel_reason=None
                    if subscription.status == SubscriptionStatus.ENABLED
                    else disabled_cancel_reason(subscription.disabled_reason),
                )
                rows.append(row)
                if (
                    len(inline) < inline_limit
                    and row["status"] == "pending"
                    and worker is not None
                    and not worker.runtime.is_slow(subscription.id, clock)
                ):
                    # Sent by this job right after commit: leased at insert, no claim needed.
                    row["lease_until"], row["lease_owner"] = lease.until, lease.owner
                    inline.append(
                        Claimed.inserted(
                            row["id"], workspace_id=workspace_id, event_id=event_id, subscription_id=subscription.id
                        )
                    )
                    held[subscription.id] = subscription
                    if event_id not in bodies:
                        bodies[event_id] = Body.of(event_id, workspace_id, event_type, created_at, data)
        await insert_rows(session, _deliveries, rows)
    pending = [row["id"] for row in rows if row["status"] == "pending" and row["lease_until"] is None]
    if pending:
        await schedule_deliveries(app, pending)
    logger.debug("dispatched %d events into %d deliveries (%d sent inline)", claimed, len(rows), len(inline))
    if inline and worker is not None:
        inline.sort(key=lambda c: c.id)
        lease.ids = [c.id for c in inline]
        try:
            await run(worker, Batch(lease=lease, claimed=inline, bodies=bodies, subscriptions=held, now=now))
        except Exception as exc:
            # The events are dispatched and the rows stored: their lease runs out and the sweeper re-enqueues them.
            logger.warning(
                "inline delivery of %d deliveries failed, left to the sweeper: %s", len(inline), type(exc).__name__
            )
    return claimed
