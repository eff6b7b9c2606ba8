"""Read side of the admin API: events, deliveries and their attempts, newest first, always workspace-scoped.

Time filters are turned into bounds on the ULID ids (whose first 48 bits are the creation time in ms),
so every list is one range scan of a ``(workspace_id, …, id)`` index, however many rows the table holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from synchook.errors import NotFound
from synchook.ids import looks_like_id, ulid
from synchook.outbox import Event
from webhooks.admin.schemas import DeliveryFilters, TimeRange
from webhooks.models import Delivery, DeliveryAttempt

__all__ = [
    "DeliveryDetail",
    "get_delivery",
    "id_bound",
    "id_range_conditions",
    "list_deliveries",
    "list_events",
]


def id_bound(prefix: str, at: datetime) -> str:
    """The smallest id with this prefix created at ``at`` (ms precision): ids >= it are as new or newer."""
    millis = max(int(at.timestamp() * 1000), 0)
    return f"{prefix}_{ulid(millis)[:10]}{'0' * 16}"


def id_range_conditions(column: Any, prefix: str, window: TimeRange) -> list[Any]:
    conditions: list[Any] = []
    if window.since is not None:
        conditions.append(column >= id_bound(prefix, window.since))
    if window.until is not None:
        conditions.append(column < id_bound(prefix, window.until))
    return conditions


async def list_events(
    session: AsyncSession,
    *,
    workspace_id: str,
    event_type: str | None,
    window: TimeRange,
    limit: int,
    before_id: str | None,
) -> list[Event]:
    """Events of the workspace, newest first (``limit`` rows; callers ask for one more to detect a next page)."""
    query = sa.select(Event).where(
        col(Event.workspace_id) == workspace_id, *id_range_conditions(col(Event.id), "evt", window)
    )
    if event_type is not None:
        query = query.where(col(Event.type) == event_type)
    if before_id is not None:
        query = query.where(col(Event.id) < before_id)
    rows = await session.execute(query.order_by(col(Event.id).desc()).limit(limit))
    return list(rows.scalars())


async def list_deliveries(
    session: AsyncSession,
    *,
    workspace_id: str,
    filters: DeliveryFilters,
    limit: int,
    before_id: str | None,
) -> list[Delivery]:
    """Deliveries of the workspace matching the filters, newest first."""
    query = sa.select(Delivery).where(
        col(Delivery.workspace_id) == workspace_id, *id_range_conditions(col(Delivery.id), "dlv", filters.range)
    )
    # (workspace_id, status, id) or (workspace_id, subscription_id, id) serves each of these.
    if filters.status is not None:
        query = query.where(col(Delivery.status) == filters.status)
    if filters.subscription_id is not None:
        query = query.where(col(Delivery.subscription_id) == filters.subscription_id)
    if filters.event_type is not None:
        query = query.where(col(Delivery.event_type) == filters.event_type)
    if before_id is not None:
        query = query.where(col(Delivery.id) < before_id)
    rows = await session.execute(query.order_by(col(Delivery.id).desc()).limit(limit))
    return list(rows.scalars())


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    delivery: Delivery
    attempts: list[DeliveryAttempt]
    event: Event | None


async def find_delivery(session: AsyncSession, *, workspace_id: str, delivery_id: str) -> Delivery:
    if not looks_like_id(delivery_id, "dlv"):
        raise NotFound("Delivery")
    delivery = (
        await session.execute(
            sa.select(Delivery).where(col(Delivery.workspace_id) == workspace_id, col(Delivery.id) == delivery_id)
        )
    ).scalar_one_or_none()
    if delivery is None:
        raise NotFound("Delivery")
    return delivery


async def get_delivery(session: AsyncSession, *, workspace_id: str, delivery_id: str) -> DeliveryDetail:
    """One delivery with every attempt (oldest first) and the event body it carries."""
    delivery = await find_delivery(session, workspace_id=workspace_id, delivery_id=delivery_id)
    attempts = (
        await session.execute(
            sa.select(DeliveryAttempt)
            .where(col(DeliveryAttempt.delivery_id) == delivery.id)
            .order_by(col(DeliveryAttempt.number), col(DeliveryAttempt.id))
        )
    ).scalars()
    event = (
        await session.execute(
            sa.select(Event).where(col(Event.id) == delivery.event_id, col(Event.workspace_id) == workspace_id)
        )
    ).scalar_one_or_none()
    return DeliveryDetail(delivery=delivery, attempts=list(attempts), event=event)
