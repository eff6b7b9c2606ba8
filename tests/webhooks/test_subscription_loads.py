"""A worker reads the subscriptions of each batch fresh, in one statement, and so sees any change at once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from subscriptions.models import Subscription
from synchook.context import AppContext
from tests.factories import make_tenant
from tests.factories.webhooks import deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from tests.support.workers import sends_finished
from webhooks.delivery import pipeline
from webhooks.delivery.claim import load_subscriptions
from webhooks.delivery.runtime import WorkerContext
from webhooks.delivery.stages import Endpoint
from webhooks.dispatch import dispatch_events
from webhooks.verify import verify

_subscriptions = Subscription.__table__  # type: ignore[attr-defined]


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every statement any engine of this process runs while the test does."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sa.event.listen(Engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(Engine, "before_cursor_execute", record)


async def _load(ctx: AppContext, ids: set[str]) -> dict[str, Endpoint]:
    async with ctx.db.session() as session:
        return await load_subscriptions(session, ids)


async def test_a_batch_reads_its_subscriptions_in_one_statement_and_builds_no_orm_object(
    app_ctx: AppContext, statements: list[str]
) -> None:
    # A batch to a large fan-out names up to 200 subscriptions it has not seen: ORM objects for them took a second
    # query and ~60 us each, most of what made a delivery to 100,000 subscriptions dearer than one to 10.
    tenant = await make_tenant(app_ctx)
    subs = [await make_subscription(app_ctx, tenant.workspace_id, url=f"https://{n}.example/hook") for n in "abc"]
    statements.clear()
    loaded = await _load(app_ctx, {s.id for s in subs})
    assert len([s for s in statements if "FROM subscriptions" in s]) == 1
    assert all(type(endpoint) is Endpoint for endpoint in loaded.values())
    assert {s.id: (loaded[s.id].url, loaded[s.id].workspace_id) for s in subs} == {
        s.id: (s.url, tenant.workspace_id) for s in subs
    }


async def test_a_change_by_any_path_is_seen_by_the_next_load(app_ctx: AppContext) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://a.example/hook")
    before = (await _load(app_ctx, {sub.id}))[sub.id]
    # Not through the service, and updated_at left alone (as a reseal or a hand-written fix would).
    async with app_ctx.db.session() as session:
        await session.execute(
            sa.update(_subscriptions).where(_subscriptions.c.id == sub.id).values(url="https://c.example/hook")
        )
    after = (await _load(app_ctx, {sub.id}))[sub.id]
    assert after.url == "https://c.example/hook" and before.url == "https://a.example/hook"


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
    finally:
        await worker.close()


async def test_a_relay_batch_in_many_workspaces_matches_rows_and_sends_them_inline(app_ctx: AppContext) -> None:
    # A relay batch of 20 events in 20 workspaces matches 20 times: building ORM objects for every match made a
    # delivery in (i)'s 10,000 workspaces dearer than one in a single workspace. The matches are rows that carry
    # what sending needs, so the batch's first deliveries still go out inline, signed for their own subscription.
    built: list[Any] = []

    def count(target: Any, _context: Any) -> None:
        built.append(target)

    worker = WorkerContext.open(app_ctx)
    sa.event.listen(Subscription, "load", count)
    try:
        async with Receiver() as receiver:
            tenants = [await make_tenant(app_ctx) for _ in range(3)]
            subs = {
                t.workspace_id: await make_subscription(app_ctx, t.workspace_id, url=receiver.url(f"/{n}"))
                for n, t in enumerate(tenants)
            }
            events = [e for t in tenants for e in await make_events(app_ctx, t.workspace_id, hand_off_now=False)]
            assert await dispatch_events(app_ctx, events, worker=worker) == 3
            received = await receiver.wait_for(3)
            await sends_finished(worker)
        by_path = {sub.url.rsplit("/", 1)[1]: sub for sub in subs.values()}
        for request in received:
            secret = by_path[request.path.lstrip("/")].secret
            assert verify(request.body, dict(request.headers), secret)["data"]["workspace_id"] in subs
        assert built == []
        sent = {d.subscription_id: d.workspace_id for d in await deliveries(app_ctx, status="succeeded")}
        assert sent == {sub.id: workspace for workspace, sub in subs.items()}
    finally:
        sa.event.remove(Subscription, "load", count)
        await worker.close()


async def test_a_relay_batch_matches_its_workspaces_in_one_statement(
    app_ctx: AppContext, statements: list[str]
) -> None:
    # (i)'s 10,000 workspaces: a relay batch of 20 events named 20 workspaces and made 20 match statements.
    tenants = [await make_tenant(app_ctx) for _ in range(3)]
    for tenant in tenants:
        await make_subscription(app_ctx, tenant.workspace_id, url=f"https://{tenant.workspace_id}.example/hook")
    events = [e for t in tenants for e in await make_events(app_ctx, t.workspace_id, hand_off_now=False)]
    statements.clear()
    assert await dispatch_events(app_ctx, events, worker=None) == 3
    assert len([s for s in statements if "FROM subscriptions" in s]) == 1
    made = {(d.event_id, d.workspace_id) for d in await deliveries(app_ctx)}
    assert made == {(e, t.workspace_id) for e, t in zip(events, tenants, strict=True)}
