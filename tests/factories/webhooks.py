"""Factories for the delivery engine's tests: subscriptions as rows, outbox events, and queries on the outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from subscriptions.keys import generate_ed25519_keypair, generate_webhook_secret
from subscriptions.models import ANY, Subscription, SubscriptionFilter
from synchook.context import AppContext
from synchook.ids import new_id
from synchook.outbox import hand_off, record_event
from synchook.timeutil import isoformat, utcnow
from webhooks.models import Delivery, DeliveryAttempt


@dataclass(frozen=True)
class Sub:
    id: str
    workspace_id: str
    url: str
    secret: str  # whsec_… (or whsk_… for ed25519)
    public_key: str | None = None
    previous_secret: str | None = None


async def make_subscription(
    ctx: AppContext,
    workspace_id: str,
    *,
    url: str,
    event_types: Sequence[str] = ("*",),
    providers: Sequence[str] | None = None,
    status: str = "enabled",
    disabled_reason: str | None = None,
    rate_limit_per_second: int | None = None,
    signature_type: str = "hmac-sha256",
    previous_secret: str | None = None,
    previous_expires_in: timedelta = timedelta(hours=1),
) -> Sub:
    subscription_id = new_id("sub")
    public_key: str | None = None
    if signature_type == "ed25519":
        secret, public_key = generate_ed25519_keypair()
    else:
        secret = generate_webhook_secret()
    now = utcnow()
    row = Subscription(
        id=subscription_id,
        workspace_id=workspace_id,
        url=url,
        event_types=list(event_types),
        providers=list(providers) if providers is not None else None,
        status=status,
        disabled_reason=disabled_reason,
        signature_type=signature_type,
        secret_sealed=ctx.box.seal(secret, context=subscription_id),
        public_key=public_key,
        previous_secret_sealed=ctx.box.seal(previous_secret, context=subscription_id) if previous_secret else None,
        previous_secret_expires_at=now + previous_expires_in if previous_secret else None,
        rate_limit_per_second=rate_limit_per_second,
        created_at=now,
        updated_at=now,
    )
    async with ctx.db.session() as session:
        session.add(row)
        await session.flush()
        filters = [
            {"subscription_id": subscription_id, "workspace_id": workspace_id, "event_pattern": p, "provider": v}
            for p in dict.fromkeys(event_types)
            for v in (providers or [ANY])
        ]
        await session.execute(sa.insert(SubscriptionFilter), filters)
    return Sub(subscription_id, workspace_id, url, secret, public_key, previous_secret)


def sync_data(workspace_id: str, *, provider: str = "google", status: str = "completed") -> dict[str, Any]:
    now = isoformat(utcnow())
    return {
        "job_id": new_id("cal_sync"),
        "workspace_id": workspace_id,
        "mode": "incremental",
        "provider": provider,
        "status": status,
        "queued_at": now,
        "started_at": now,
        "completed_at": now,
        "stats": {"calendars": 1, "events_created": 2, "events_updated": 0, "events_deleted": 0},
        "error": None,
    }


async def make_events(
    ctx: AppContext,
    workspace_id: str,
    *,
    count: int = 1,
    type: str = "calendar.sync.completed",
    provider: str | None = "google",
    hand_off_now: bool = True,
) -> list[str]:
    """Record ``count`` outbox events in one transaction and (by default) hand them to the queue."""
    async with ctx.db.session() as session:
        events = [
            record_event(
                session,
                workspace_id=workspace_id,
                type=type,
                provider=provider,
                data=sync_data(workspace_id, provider=provider or "google"),
            )
            for _ in range(count)
        ]
    ids = [e.id for e in events]
    if hand_off_now:
        assert await hand_off(ctx.enqueue, ids)
    return ids


async def deliveries(ctx: AppContext, **where: Any) -> list[Delivery]:
    async with ctx.db.session() as session:
        query = sa.select(Delivery).order_by(Delivery.id)
        for name, value in where.items():
            query = query.where(getattr(Delivery, name) == value)
        return list((await session.execute(query)).scalars())


async def attempts(ctx: AppContext, delivery_id: str) -> list[DeliveryAttempt]:
    async with ctx.db.session() as session:
        query = (
            sa.select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == delivery_id)  # type: ignore[arg-type]
            .order_by(DeliveryAttempt.number)  # type: ignore[arg-type]
        )
        return list((await session.execute(query)).scalars())


async def subscription(ctx: AppContext, subscription_id: str) -> Subscription:
    async with ctx.db.session() as session:
        found = await session.get(Subscription, subscription_id)
        assert found is not None
        return found


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
