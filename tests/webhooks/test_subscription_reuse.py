"""A worker reuses the subscriptions it built while their rows are unchanged, and sees any change at once."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from subscriptions.models import Subscription
from synchook.context import AppContext
from tests.factories import make_tenant
from tests.factories.webhooks import deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from webhooks.delivery import pipeline
from webhooks.delivery.claim import load_subscriptions
from webhooks.delivery.runtime import WorkerContext
from webhooks.dispatch import dispatch_events

_subscriptions = Subscription.__table__  # type: ignore[attr-defined]


async def _load(ctx: AppContext, ids: set[str], known: dict[str, Any]) -> dict[str, Subscription]:
    async with ctx.db.session() as session:
        return await load_subscriptions(session, ids, known)


async def test_unchanged_rows_give_the_same_objects(app_ctx: AppContext) -> None:
    tenant = await make_tenant(app_ctx)
    first = await make_subscription(app_ctx, tenant.workspace_id, url="https://a.example/hook")
    second = await make_subscription(app_ctx, tenant.workspace_id, url="https://b.example/hook")
    known: dict[str, Any] = {}
    before = await _load(app_ctx, {first.id, second.id}, known)
    after = await _load(app_ctx, {first.id, second.id}, known)
    assert after[first.id] is before[first.id] and after[second.id] is before[second.id]
    assert set(known) == {first.id, second.id}


async def test_a_change_by_any_path_is_seen_by_the_next_load(app_ctx: AppContext) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://a.example/hook")
    known: dict[str, Any] = {}
    before = (await _load(app_ctx, {sub.id}, known))[sub.id]
    # Not through the service, and updated_at left alone (as a reseal or a hand-written fix would).
    async with app_ctx.db.session() as session:
        await session.execute(
            sa.update(_subscriptions).where(_subscriptions.c.id == sub.id).values(url="https://c.example/hook")
        )
    after = (await _load(app_ctx, {sub.id}, known))[sub.id]
    assert after is not before
    assert after.url == "https://c.example/hook" and before.url == "https://a.example/hook"
    assert (await _load(app_ctx, {sub.id}, known))[sub.id] is after


async def test_one_worker_sends_to_the_new_url_after_an_update(app_ctx: AppContext) -> None:
    worker = WorkerContext.open(app_ctx)
    try:
        async with Receiver() as receiver:
            tenant = await make_tenant(app_ctx)
            sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/old"))
            for path in ("/old", "/new"):
                if path == "/new":
                    async with app_ctx.db.session() as session:
                        await session.execute(
                            sa.update(_subscriptions)
                            .where(_subscriptions.c.id == sub.id)
                            .values(url=receiver.url("/new"))
                        )
                events = await make_events(app_ctx, tenant.workspace_id, hand_off_now=False)
                await dispatch_events(app_ctx, events, worker=None)
                pending = [d.id for d in await deliveries(app_ctx, status="pending")]
                assert await pipeline.deliver(worker, pending) == 1
                await receiver.wait_for(1, path=path)
            assert [r.path for r in receiver.requests()] == ["/old", "/new"]
            assert len(worker.runtime.subscriptions) == 1
    finally:
        await worker.close()
