"""Endpoint health: track how long a subscription has failed, and disable it past ``disable_after``.

Runs inside the unit of work that records a batch's attempts, so the subscription's state, the
``webhook.subscription.disabled`` event (outbox) and the cancelled deliveries commit together. The
subscriptions table is written by ``subscriptions.service``, the deliveries by ``webhooks.delivery.rows``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from subscriptions.catalogue import subscription_disabled_data
from subscriptions.models import Subscription
from subscriptions.service import disable_subscription, record_endpoint_health
from synchook.db import among
from synchook.outbox import record_event
from synchook.timeutil import isoformat
from webhooks.delivery.rows import cancel_open_deliveries, disabled_cancel_reason

__all__ = ["SUBSCRIPTION_DISABLED_EVENT", "update_health"]

logger = logging.getLogger(__name__)

SUBSCRIPTION_DISABLED_EVENT = "webhook.subscription.disabled"

_subs = Subscription.__table__  # type: ignore[attr-defined]


async def update_health(
    session: AsyncSession,
    *,
    succeeded: Collection[str],
    failed: Collection[str],
    now: datetime,
    disable_after: float,
) -> list[str]:
    """Record a batch's outcome per subscription; return the ids of the disabled-events it recorded."""
    await record_endpoint_health(session, succeeded=succeeded, failed=failed, now=now)
    only_failed = sorted(set(failed) - set(succeeded))
    if not only_failed:
        return []
    cutoff = now - timedelta(seconds=disable_after)
    rows = (
        await session.execute(
            sa.select(_subs.c.id, _subs.c.workspace_id, _subs.c.url, _subs.c.failing_since).where(
                among(_subs.c.id, only_failed),
                _subs.c.status == "enabled",
                _subs.c.deleted_at.is_(None),
                _subs.c.failing_since <= cutoff,
            )
        )
    ).all()
    event_ids: list[str] = []
    for subscription_id, workspace_id, url, failing_since in rows:
        event_id = await _disable(
            session, subscription_id=subscription_id, workspace_id=workspace_id, url=url, since=failing_since, now=now
        )
        if event_id is not None:
            event_ids.append(event_id)
    return event_ids


async def _disable(
    session: AsyncSession, *, subscription_id: str, workspace_id: str, url: str, since: datetime, now: datetime
) -> str | None:
    reason = f"deliveries failed continuously since {isoformat(since)}"
    if not await disable_subscription(
        session, workspace_id=workspace_id, subscription_id=subscription_id, reason=reason, now=now
    ):
        return None  # another worker disabled it first, and emitted the event
    # Open deliveries not in flight elsewhere are kept, cancelled with the reason, for a later replay;
    # one in flight on another worker is cancelled at its next claim.
    await cancel_open_deliveries(
        session,
        workspace_id=workspace_id,
        subscription_id=subscription_id,
        reason=disabled_cancel_reason(reason),
        now=now,
    )
    event = record_event(
        session,
        workspace_id=workspace_id,
        type=SUBSCRIPTION_DISABLED_EVENT,
        data=subscription_disabled_data(
            workspace_id=workspace_id, subscription_id=subscription_id, url=url, reason=reason, disabled_at=now
        ),
        at=now,
    )
    logger.warning("subscription %s disabled: %s", subscription_id, reason)
    return event.id
