"""Fan-out: one delivery per matching subscription, in one transaction, exactly once per event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from synchook.context import AppContext
from synchook.outbox import Event
from tests.factories import make_tenant
from tests.factories.webhooks import deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from webhooks.dispatch import dispatch_events

Run = Callable[..., Awaitable[Any]]

# arq's Worker.close() calls redis-py's deprecated close() (conftest's make_worker closes every worker).
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def test_one_delivery_per_matching_subscription(app_ctx: AppContext, receiver: Receiver, run_worker: Run) -> None:
    tenant = await make_tenant(app_ctx)
    wanted = [
        await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url(f"/s{i}"), event_types=[pattern])
        for i, pattern in enumerate(["*", "calendar.sync.*", "calendar.sync.completed"])
    ]
    google_only = await make_subscription(
        app_ctx, tenant.workspace_id, url=receiver.url("/google"), event_types=["*"], providers=["google"]
    )
    await make_subscription(
        app_ctx, tenant.workspace_id, url=receiver.url("/failed"), event_types=["calendar.sync.failed"]
    )
    await make_subscription(
        app_ctx, tenant.workspace_id, url=receiver.url("/ms"), event_types=["*"], providers=["microsoft"]
    )

    [event_id] = await make_events(app_ctx, tenant.workspace_id, provider="google")
    await run_worker()

    rows = await deliveries(app_ctx, event_id=event_id)
    assert sorted(r.subscription_id for r in rows) == sorted([s.id for s in wanted] + [google_only.id])
    assert {r.status for r in rows} == {"succeeded"}
    assert sorted(r.path for r in receiver.requests()) == ["/google", "/s0", "/s1", "/s2"]


async def test_workspaces_never_see_each_others_events(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    first, second = await make_tenant(app_ctx), await make_tenant(app_ctx)
    await make_subscription(app_ctx, first.workspace_id, url=receiver.url("/first"))
    await make_subscription(app_ctx, second.workspace_id, url=receiver.url("/second"))

    await make_events(app_ctx, first.workspace_id, count=3)
    await run_worker()

    assert receiver.count("/first") == 3
    assert receiver.count("/second") == 0
    assert {d.workspace_id for d in await deliveries(app_ctx)} == {first.workspace_id}


async def test_disabled_subscription_gets_a_cancelled_delivery(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(
        app_ctx, tenant.workspace_id, url=receiver.url("/off"), status="disabled", disabled_reason="maintenance"
    )

    await make_events(app_ctx, tenant.workspace_id)
    await run_worker()

    [row] = await deliveries(app_ctx, subscription_id=sub.id)
    assert row.status == "cancelled"
    assert row.cancel_reason == "subscription disabled: maintenance"
    assert receiver.count() == 0


async def test_concurrent_dispatchers_claim_each_event_once(app_ctx: AppContext, receiver: Receiver) -> None:
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/once"))
    ids = await make_events(app_ctx, tenant.workspace_id, count=20, hand_off_now=False)

    claimed = await asyncio.gather(*(dispatch_events(app_ctx, ids, worker=None) for _ in range(4)))

    assert sum(claimed) == 20
    assert len(await deliveries(app_ctx)) == 20
    async with app_ctx.db.session() as session:
        undispatched = await session.scalar(
            sa.select(sa.func.count()).select_from(Event).where(Event.dispatched_at.is_(None))  # type: ignore[union-attr]
        )
    assert undispatched == 0


async def test_many_subscriptions_fan_out_in_batches(app_ctx: AppContext, receiver: Receiver, run_worker: Run) -> None:
    tenant = await make_tenant(app_ctx)
    for i in range(30):
        await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url(f"/n{i}"))

    await make_events(app_ctx, tenant.workspace_id, count=10)
    await run_worker()

    assert receiver.count() == 300
    rows = await deliveries(app_ctx)
    assert len(rows) == 300 and {r.status for r in rows} == {"succeeded"}
