"""Delivery rows outside a batch: a new one (fan-out, replay), a fresh retry sequence (replay), and the
cancelling of a subscription's open ones (deleted, or disabled for failing). Each is written here only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from synchook.ids import new_id
from webhooks.models import OPEN_STATUSES, Delivery

__all__ = ["cancel_open_deliveries", "disabled_cancel_reason", "new_delivery", "reset_for_replay"]

_deliveries = Delivery.__table__  # type: ignore[attr-defined]


def disabled_cancel_reason(reason: str | None) -> str:
    return f"subscription disabled: {reason or 'no reason given'}"[:500]


def new_delivery(
    *,
    workspace_id: str,
    event_id: str,
    event_type: str,
    subscription_id: str,
    now: datetime,
    cancel_reason: str | None = None,
    replays: int = 0,
) -> dict[str, Any]:
    """A new delivery row (every column), due now; or, with ``cancel_reason``, cancelled from the start."""
    pending = cancel_reason is None
    return {
        "id": new_id("dlv"),
        "workspace_id": workspace_id,
        "event_id": event_id,
        "event_type": event_type,
        "subscription_id": subscription_id,
        "status": "pending" if pending else "cancelled",
        "attempt_count": 0,
        "next_attempt_at": now if pending else None,
        "lease_until": None,
        "lease_owner": None,
        "last_status_code": None,
        "last_error": None,
        "cancel_reason": cancel_reason,
        "replays": replays,
        "created_at": now,
        "updated_at": now,
        "completed_at": None if pending else now,
    }


async def reset_for_replay(
    session: AsyncSession, delivery_ids: Sequence[str], *, workspace_id: str, now: datetime
) -> list[str]:
    """Start a fresh retry sequence for `workspace_id`'s deliveries not pending or in flight; returns the ids reset.

    The caller commits, then passes the ids to :func:`webhooks.delivery.schedule.schedule_deliveries`.
    """
    ids = list(dict.fromkeys(delivery_ids))
    reset: list[str] = []
    for start in range(0, len(ids), 500):
        result = await session.execute(
            sa.update(_deliveries)
            .where(
                _deliveries.c.workspace_id == workspace_id,
                _deliveries.c.id.in_(ids[start : start + 500]),
                _deliveries.c.status != "pending",
                sa.or_(_deliveries.c.lease_until.is_(None), _deliveries.c.lease_until < now),
            )
            .values(
                status="pending",
                attempt_count=0,
                next_attempt_at=now,
                lease_until=None,
                lease_owner=None,
                cancel_reason=None,
                completed_at=None,
                replays=_deliveries.c.replays + 1,
                updated_at=now,
            )
            .returning(_deliveries.c.id)
        )
        reset.extend(r[0] for r in result)
    return reset


async def cancel_open_deliveries(
    session: AsyncSession, *, workspace_id: str, subscription_id: str, reason: str, now: datetime
) -> int:
    """Cancel the subscription's open deliveries, kept with ``reason`` for a later replay; returns how many.

    One in flight on a worker is left to it: cancelled at its next claim, as the subscription is no longer
    enabled. The caller commits.
    """
    result = await session.execute(
        sa.update(_deliveries)
        .where(
            _deliveries.c.workspace_id == workspace_id,
            _deliveries.c.subscription_id == subscription_id,
            _deliveries.c.status.in_(OPEN_STATUSES),
            sa.or_(_deliveries.c.lease_until.is_(None), _deliveries.c.lease_until < now),
        )
        .values(status="cancelled", cancel_reason=reason, next_attempt_at=None, updated_at=now, completed_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)
