"""Factories for the admin tests: events and deliveries as rows at a chosen time (ids carry that time)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from synchook.context import AppContext
from synchook.ids import ulid
from synchook.timeutil import utcnow
from tests.factories.webhooks import sync_data
from webhooks.models import Delivery, DeliveryAttempt, Replay


def id_at(prefix: str, at: datetime) -> str:
    return f"{prefix}_{ulid(int(at.timestamp() * 1000))}"


@dataclass(frozen=True)
class Seeded:
    event_id: str
    delivery_id: str | None


async def seed_event(
    ctx: AppContext,
    workspace_id: str,
    *,
    at: datetime | None = None,
    type: str = "calendar.sync.completed",
    provider: str | None = "google",
    dispatched: bool = True,
    data: dict[str, Any] | None = None,
) -> str:
    """One outbox event; ``data`` defaults to a sync job's body."""
    from synchook.outbox import Event

    at = at or utcnow()
    event = Event(
        id=id_at("evt", at),
        workspace_id=workspace_id,
        type=type,
        provider=provider,
        data=data if data is not None else sync_data(workspace_id, provider=provider or "google"),
        created_at=at,
        dispatched_at=at if dispatched else None,
    )
    async with ctx.db.session() as session:
        session.add(event)
    return event.id


async def seed_delivery(
    ctx: AppContext,
    workspace_id: str,
    subscription_id: str,
    *,
    status: str = "dead",
    at: datetime | None = None,
    type: str = "calendar.sync.completed",
    event_id: str | None = None,
    attempts: Sequence[int | None] = (500,),
    lease_for: timedelta | None = None,
    data: dict[str, Any] | None = None,
) -> Seeded:
    """An event (unless given) and one delivery of it with ``attempts`` (status codes; None = connection error)."""
    at = at or utcnow()
    if event_id is None:
        event_id = await seed_event(ctx, workspace_id, at=at, type=type, data=data)
    delivery_id = id_at("dlv", at)
    finished = status in ("succeeded", "dead", "cancelled")
    last = attempts[-1] if attempts else None
    async with ctx.db.session() as session:
        session.add(
            Delivery(
                id=delivery_id,
                workspace_id=workspace_id,
                event_id=event_id,
                event_type=type,
                subscription_id=subscription_id,
                status=status,
                attempt_count=len(attempts),
                next_attempt_at=None if finished else at,
                lease_until=utcnow() + lease_for if lease_for else None,
                last_status_code=last,
                last_error=None if last else ("connection refused" if attempts else None),
                created_at=at,
                updated_at=at,
                completed_at=at if finished else None,
            )
        )
        await session.flush()
        for number, code in enumerate(attempts, start=1):
            session.add(
                DeliveryAttempt(
                    delivery_id=delivery_id,
                    workspace_id=workspace_id,
                    number=number,
                    started_at=at + timedelta(seconds=number),
                    duration_ms=12 * number,
                    status_code=code,
                    error=None if code else "connection refused",
                    response_body=f"attempt {number} said {code}" if code else None,
                )
            )
    return Seeded(event_id=event_id, delivery_id=delivery_id)


async def delivery(ctx: AppContext, delivery_id: str) -> Delivery:
    async with ctx.db.session() as session:
        found = await session.get(Delivery, delivery_id)
        assert found is not None
        return found


async def replay_row(ctx: AppContext, replay_id: str) -> Replay:
    async with ctx.db.session() as session:
        found = await session.get(Replay, replay_id)
        assert found is not None
        return found


async def count_rows(ctx: AppContext, model: type, **where: object) -> int:
    async with ctx.db.session() as session:
        query = sa.select(sa.func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(await session.scalar(query) or 0)
