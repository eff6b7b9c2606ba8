"""Retention: old finished deliveries and their attempts are purged in batches, then events left with none.

Deliveries and attempts carry no foreign keys (webhooks.models): retention and the writers that race it keep every
delivery's event and every attempt's delivery in place themselves, which the PostgreSQL cases at the end race.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from synchook.context import AppContext
from synchook.outbox import Event
from synchook.timeutil import utcnow
from tests.factories import make_tenant
from tests.factories.admin import count_rows, seed_delivery, seed_event
from tests.factories.webhooks import make_subscription
from tests.support.postgres import blocked_on_a_lock
from webhooks.admin import replays, tasks
from webhooks.admin.retention import purge_expired
from webhooks.admin.schemas import BulkReplayBody
from webhooks.delivery.rows import new_delivery
from webhooks.models import Delivery, DeliveryAttempt

_events = Event.__table__  # type: ignore[attr-defined]
_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_attempts = DeliveryAttempt.__table__  # type: ignore[attr-defined]


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


# --- races, on PostgreSQL (SQLite has one writer at a time: no two of these statements interleave) -----------------


def _postgres_only(app_ctx: AppContext) -> None:
    if app_ctx.settings.is_sqlite:
        pytest.skip("SQLite runs one write transaction at a time")


async def test_an_old_event_a_replay_is_giving_deliveries_is_not_purged(app_ctx: AppContext) -> None:
    """The replay holds the event (KEY SHARE) while it inserts: retention skips it, and the delivery keeps its event."""
    _postgres_only(app_ctx)
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    event_id = await seed_event(app_ctx, tenant.workspace_id, at=utcnow() - timedelta(days=40))
    async with app_ctx.db.session() as replaying:
        await replaying.execute(
            sa.select(_events.c.id).where(_events.c.id == event_id).with_for_update(read=True, key_share=True)
        )
        row = new_delivery(
            workspace_id=tenant.workspace_id,
            event_id=event_id,
            event_type="calendar.sync.completed",
            subscription_id=sub.id,
            now=utcnow(),
            replays=1,
        )
        await replaying.execute(sa.insert(_deliveries), [row])
        purge = asyncio.create_task(purge_expired(app_ctx.db, retention_days=30))
        # Bounded: without the skip, the purge waits for this transaction and deletes the event after it.
        await asyncio.wait({purge}, timeout=10)
    purged = await purge
    assert purged.events == 0
    assert await count_rows(app_ctx, Event, id=event_id) == 1
    assert await count_rows(app_ctx, Delivery, event_id=event_id) == 1


async def test_a_replay_waits_for_an_event_retention_is_deleting_and_sends_it_nowhere(app_ctx: AppContext) -> None:
    """Retention holds the event (FOR UPDATE) to delete it: the replay's KEY SHARE waits, then finds it gone."""
    _postgres_only(app_ctx)
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    now = utcnow()
    kept = await seed_event(app_ctx, tenant.workspace_id, at=now - timedelta(days=39))
    doomed = await seed_event(app_ctx, tenant.workspace_id, at=now - timedelta(days=40))
    body = BulkReplayBody.model_validate({"since": (now - timedelta(days=41)).isoformat(), "subscription_id": sub.id})
    async with app_ctx.db.session() as session:
        replay, _ = await replays.create_bulk_replay(
            session, workspace_id=tenant.workspace_id, body=body, requested_by="test", replay_max=100_000
        )
    async with app_ctx.db.session() as retention:
        await retention.execute(sa.select(_events.c.id).where(_events.c.id == doomed).with_for_update())
        run = asyncio.create_task(replays.run_bulk_replay(app_ctx, replay.id))
        await blocked_on_a_lock(app_ctx.db.engine, waiting_for="the replay's read of the events")
        await retention.execute(sa.delete(_events).where(_events.c.id == doomed))
    done = await run
    assert done is not None and (done.status, done.replayed) == ("completed", 1)
    async with app_ctx.db.session() as session:
        referred = set((await session.execute(sa.select(_deliveries.c.event_id))).scalars())
    assert referred == {kept}


async def test_an_attempt_recorded_while_its_delivery_is_purged_goes_with_it(app_ctx: AppContext) -> None:
    """A record holds the delivery's row and adds an attempt; retention's delete waits for it, then takes both."""
    _postgres_only(app_ctx)
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/a")
    old = utcnow() - timedelta(days=40)
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="succeeded", at=old, attempts=(200,))
    async with app_ctx.db.session() as recording:
        await recording.execute(
            sa.update(_deliveries).where(_deliveries.c.id == seeded.delivery_id).values(updated_at=utcnow())
        )
        await recording.execute(
            sa.insert(_attempts).values(
                delivery_id=seeded.delivery_id,
                workspace_id=tenant.workspace_id,
                number=2,
                started_at=utcnow(),
                duration_ms=3,
                status_code=200,
            )
        )
        purge = asyncio.create_task(purge_expired(app_ctx.db, retention_days=30))
        await blocked_on_a_lock(app_ctx.db.engine, waiting_for="retention's delete of the delivery")
    purged = await purge
    assert (purged.deliveries, purged.attempts) == (1, 2)
    assert await count_rows(app_ctx, DeliveryAttempt, delivery_id=seeded.delivery_id) == 0
