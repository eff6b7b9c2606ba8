"""Fan-out: each outbox event becomes one delivery row per matching subscription, then ids go to the queue.

One transaction claims the events (``dispatched_at`` set only where still NULL, so concurrent relays
and sweepers hand each event out exactly once) and inserts all their deliveries; only after commit
are jobs enqueued. A failed enqueue loses nothing: the delivery sweeper finds due rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from subscriptions.models import Subscription
from synchook.context import AppContext
from synchook.ids import new_id
from synchook.outbox import Event
from synchook.timeutil import utcnow
from webhooks.engine import schedule_deliveries, write_lock
from webhooks.health import SUBSCRIPTION_DISABLED_EVENT, disabled_cancel_reason
from webhooks.models import Delivery

__all__ = ["dispatch_events"]

logger = logging.getLogger(__name__)

_events = Event.__table__  # type: ignore[attr-defined]
_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_CLAIM_CHUNK = 500

MatchKey = tuple[str, str, str | None, str | None]


async def dispatch_events(app: AppContext, event_ids: Sequence[str]) -> int:
    """Create the deliveries of these events (those not yet dispatched) and enqueue them; returns events claimed."""
    from subscriptions.matching import match_subscriptions

    ids = list(dict.fromkeys(event_ids))
    if not ids:
        return 0
    now = utcnow()
    rows: list[dict[str, Any]] = []
    claimed = 0
    async with write_lock(app), app.db.session() as session:
        events: list[Any] = []
        for start in range(0, len(ids), _CLAIM_CHUNK):
            result = await session.execute(
                sa.update(_events)
                .where(_events.c.id.in_(ids[start : start + _CLAIM_CHUNK]), _events.c.dispatched_at.is_(None))
                .values(dispatched_at=now)
                .returning(
                    _events.c.id,
                    _events.c.workspace_id,
                    _events.c.type,
                    _events.c.provider,
                    _events.c.target_subscription_id,
                    _events.c.data,
                )
            )
            events.extend(result.all())
        claimed = len(events)
        # A batch of lifecycle events mostly shares a few (workspace, type, provider) keys: match each once.
        matches: dict[MatchKey, list[Subscription]] = {}
        for event_id, workspace_id, event_type, provider, target, data in sorted(events):
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
                rows.append(_delivery_row(event_id, workspace_id, event_type, subscription, now))
        if rows:
            await session.execute(sa.insert(_deliveries), rows)
    pending = [row["id"] for row in rows if row["status"] == "pending"]
    if pending:
        await schedule_deliveries(app, pending)
    logger.debug("dispatched %d events into %d deliveries", claimed, len(rows))
    return claimed


def _delivery_row(event_id: str, workspace_id: str, event_type: str, subscription: Subscription, now: Any) -> dict:
    enabled = subscription.status == "enabled"
    return {
        "id": new_id("dlv"),
        "workspace_id": workspace_id,
        "event_id": event_id,
        "event_type": event_type,
        "subscription_id": subscription.id,
        "status": "pending" if enabled else "cancelled",
        "attempt_count": 0,
        "next_attempt_at": now if enabled else None,
        "lease_until": None,
        "last_status_code": None,
        "last_error": None,
        "cancel_reason": None if enabled else disabled_cancel_reason(subscription.disabled_reason),
        "replays": 0,
        "created_at": now,
        "updated_at": now,
        "completed_at": None if enabled else now,
    }
