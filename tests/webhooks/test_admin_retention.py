"""Retention: old finished deliveries and their attempts are purged in batches, then events left with none."""

from __future__ import annotations

from datetime import timedelta

import pytest

from synchook.context import AppContext
from synchook.outbox import Event
from synchook.timeutil import utcnow
from tests.factories import make_tenant
from tests.factories.admin import count_rows, seed_delivery, seed_event
from tests.factories.webhooks import make_subscription
from webhooks.admin import tasks
from webhooks.admin.retention import purge_expired
from webhooks.models import Delivery, DeliveryAttempt


async def test_purges_old_finished_deliveries_attempts_and_orphaned_events(app_ctx: AppContext) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    now = utcnow()
    old = now - timedelta(days=31)
    gone = [
        await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status=s, at=old - timedelta(minutes=i))
        for i, s in enumerate(["succeeded", "dead", "cancelled"])
    ]
    still_open = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="failed", at=old)
    recent = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead", at=now - timedelta(days=29))
    lonely_old = await seed_event(app_ctx, tenant.workspace_id, at=old)
    undispatched_old = await seed_event(app_ctx, tenant.workspace_id, at=old, dispatched=False)

    purged = await purge_expired(app_ctx.db, retention_days=30, batch_size=2)

    assert (purged.deliveries, purged.attempts, purged.events) == (3, 3, 4)
    async with app_ctx.db.session() as session:
        left = {d.id for d in (await session.execute(Delivery.__table__.select())).all()}  # type: ignore[attr-defined]
        events = {e.id for e in (await session.execute(Event.__table__.select())).all()}  # type: ignore[attr-defined]
    assert left == {still_open.delivery_id, recent.delivery_id}
    assert events == {still_open.event_id, recent.event_id, undispatched_old}
    assert lonely_old not in events
    assert all(g.event_id not in events for g in gone)
    assert await count_rows(app_ctx, DeliveryAttempt) == 2


async def test_an_event_keeps_living_while_one_of_its_deliveries_does(app_ctx: AppContext) -> None:
    tenant = await make_tenant(app_ctx)
    a = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    b = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/b")
    old = utcnow() - timedelta(days=40)
    first = await seed_delivery(app_ctx, tenant.workspace_id, a.id, status="succeeded", at=old)
    await seed_delivery(app_ctx, tenant.workspace_id, b.id, status="pending", at=old, event_id=first.event_id)
    purged = await purge_expired(app_ctx.db, retention_days=30)
    assert (purged.deliveries, purged.events) == (1, 0)
    assert await count_rows(app_ctx, Event, id=first.event_id) == 1


@pytest.mark.parametrize("settings_overrides", [{"retention_days": 7}])
async def test_the_cron_task_uses_the_retention_setting(app_ctx: AppContext) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="succeeded", at=utcnow() - timedelta(days=8))
    kept = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead", at=utcnow() - timedelta(days=6))
    assert await tasks.purge_retention({"app": app_ctx}) == 2  # one delivery, one event
    assert await count_rows(app_ctx, Delivery) == 1
    assert await count_rows(app_ctx, Delivery, id=kept.delivery_id) == 1
