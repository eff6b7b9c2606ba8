"""Fan-out: one delivery per matching subscription, exactly once per event, a page of subscriptions per transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from subscriptions.models import Subscription
from synchook.context import AppContext
from synchook.outbox import Event
from synchook.timeutil import utcnow
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


# --- a fan-out larger than a page: page by page, resumable ------------------------------------------------

_SMALL_PAGE = 3


class _Killed(Exception):
    """Stands for the worker dying: raised inside a page's transaction, which therefore rolls back."""


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pages of 3 subscriptions and batches of at most 6 rows, so a handful of subscriptions make several pages.
    monkeypatch.setattr("webhooks.dispatch._PAGE", _SMALL_PAGE, raising=False)
    monkeypatch.setattr("webhooks.dispatch._BATCH_ROWS", 2 * _SMALL_PAGE, raising=False)


def kill_at_insert(monkeypatch: pytest.MonkeyPatch, number: int) -> None:
    """Make the ``number``-th insert of deliveries fail after writing its rows, as a worker killed mid-page."""
    import webhooks.dispatch

    real = webhooks.dispatch.insert_rows
    calls = 0

    async def insert_then_die(session: Any, table: Any, rows: Any, **kwargs: Any) -> None:
        nonlocal calls
        await real(session, table, rows, **kwargs)
        calls += bool(rows)
        if rows and calls == number:
            raise _Killed

    monkeypatch.setattr(webhooks.dispatch, "insert_rows", insert_then_die)


async def undispatched(ctx: AppContext) -> list[str]:
    async with ctx.db.session() as session:
        rows = await session.execute(sa.select(Event.id).where(Event.dispatched_at.is_(None)))  # type: ignore[call-overload, union-attr]
        return [row[0] for row in rows]


async def subscribers(ctx: AppContext, workspace_id: str, count: int, receiver: Receiver) -> list[str]:
    return [(await make_subscription(ctx, workspace_id, url=receiver.url(f"/p{i}"))).id for i in range(count)]


@pytest.mark.usefixtures("small_pages")
async def test_a_fan_out_killed_mid_way_resumes_with_no_duplicate_and_no_gap(
    app_ctx: AppContext, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant(app_ctx)
    subs = await subscribers(app_ctx, tenant.workspace_id, 10, receiver)
    [event_id] = await make_events(app_ctx, tenant.workspace_id, hand_off_now=False)

    kill_at_insert(monkeypatch, 3)
    with pytest.raises(_Killed):
        await dispatch_events(app_ctx, [event_id], worker=None)

    # Two pages were committed (each its own transaction); the third rolled back; the event is still owed.
    done = await deliveries(app_ctx, event_id=event_id)
    assert sorted(d.subscription_id for d in done) == sorted(subs)[: 2 * _SMALL_PAGE]
    assert await undispatched(app_ctx) == [event_id]

    monkeypatch.undo()
    monkeypatch.setattr("webhooks.dispatch._PAGE", _SMALL_PAGE)
    assert await dispatch_events(app_ctx, [event_id], worker=None) == 1  # the sweeper's call, after the kill

    rows = await deliveries(app_ctx, event_id=event_id)
    assert sorted(d.subscription_id for d in rows) == sorted(subs)  # each subscription once: no duplicate, no gap
    assert {d.id for d in rows} >= {d.id for d in done}  # the committed pages were kept, not made again
    assert await undispatched(app_ctx) == []


@pytest.mark.usefixtures("small_pages")
async def test_a_resumed_fan_out_that_now_fits_one_batch_makes_no_duplicate(
    app_ctx: AppContext, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant(app_ctx)
    subs = sorted(await subscribers(app_ctx, tenant.workspace_id, 8, receiver))
    [event_id] = await make_events(app_ctx, tenant.workspace_id, hand_off_now=False)
    kill_at_insert(monkeypatch, 2)
    with pytest.raises(_Killed):
        await dispatch_events(app_ctx, [event_id], worker=None)
    assert len(await deliveries(app_ctx, event_id=event_id)) == _SMALL_PAGE
    # Most of the rest are deleted meanwhile: what is left now matches fewer than a page.
    async with app_ctx.db.session() as session:
        await session.execute(
            sa.update(Subscription).where(Subscription.id.in_(subs[_SMALL_PAGE + 1 :])).values(deleted_at=utcnow())  # type: ignore[attr-defined]
        )

    monkeypatch.undo()
    monkeypatch.setattr("webhooks.dispatch._PAGE", _SMALL_PAGE)
    await dispatch_events(app_ctx, [event_id], worker=None)

    rows = await deliveries(app_ctx, event_id=event_id)
    assert sorted(d.subscription_id for d in rows) == subs[: _SMALL_PAGE + 1]
    assert await undispatched(app_ctx) == []


@pytest.mark.usefixtures("small_pages")
async def test_concurrent_dispatchers_of_paged_fan_outs_make_each_delivery_once(
    app_ctx: AppContext, receiver: Receiver
) -> None:
    tenant = await make_tenant(app_ctx)
    subs = await subscribers(app_ctx, tenant.workspace_id, 7, receiver)
    ids = await make_events(app_ctx, tenant.workspace_id, count=4, hand_off_now=False)

    # The relay job and sweepers of several workers at once, each on the same events.
    await asyncio.gather(*(dispatch_events(app_ctx, ids, worker=None) for _ in range(4)))

    rows = await deliveries(app_ctx)
    assert sorted((d.event_id, d.subscription_id) for d in rows) == sorted((e, s) for e in ids for s in subs)
    assert await undispatched(app_ctx) == []


@pytest.mark.usefixtures("small_pages")
async def test_pages_that_make_no_delivery_still_advance(app_ctx: AppContext, receiver: Receiver) -> None:
    tenant = await make_tenant(app_ctx)
    subs = sorted(await subscribers(app_ctx, tenant.workspace_id, 7, receiver))
    # The first two pages are scoped to another provider's connection: they match the filters, not the scope.
    async with app_ctx.db.session() as session:
        await session.execute(
            sa.update(Subscription)
            .where(Subscription.id.in_(subs[:6]))  # type: ignore[attr-defined]
            .values(connection_ids=["conn_elsewhere"], scope_providers=["microsoft"])
        )
    ids = await make_events(app_ctx, tenant.workspace_id, count=1, hand_off_now=False)

    await dispatch_events(app_ctx, ids, worker=None)

    assert [d.subscription_id for d in await deliveries(app_ctx)] == subs[6:]
    assert await undispatched(app_ctx) == []


@pytest.mark.usefixtures("small_pages")
async def test_a_paged_fan_out_is_delivered_by_workers_exactly_once(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    tenant = await make_tenant(app_ctx)
    await subscribers(app_ctx, tenant.workspace_id, 8, receiver)
    await make_events(app_ctx, tenant.workspace_id, count=3)

    await run_worker()

    assert receiver.count() == 24
    assert len({(r.path, r.headers["webhook-id"]) for r in receiver.requests()}) == 24
    rows = await deliveries(app_ctx)
    assert len(rows) == 24 and {r.status for r in rows} == {"succeeded"}


@pytest.mark.usefixtures("small_pages")
async def test_a_batch_past_its_row_budget_goes_on_in_the_next_batch(
    app_ctx: AppContext, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant(app_ctx)
    subs = await subscribers(app_ctx, tenant.workspace_id, 2, receiver)
    ids = await make_events(app_ctx, tenant.workspace_id, count=5, hand_off_now=False)
    import webhooks.dispatch

    real = webhooks.dispatch.insert_rows
    sizes: list[int] = []

    async def counted(session: Any, table: Any, rows: Any, **kwargs: Any) -> None:
        sizes.append(len(rows))
        await real(session, table, rows, **kwargs)

    monkeypatch.setattr(webhooks.dispatch, "insert_rows", counted)

    assert await dispatch_events(app_ctx, ids, worker=None) == 5

    assert sizes == [6, 4]  # 3 events of 2 in the first transaction, the other 2 in the next: no page needed
    rows = await deliveries(app_ctx)
    assert sorted((d.event_id, d.subscription_id) for d in rows) == sorted((e, s) for e in ids for s in subs)
    assert await undispatched(app_ctx) == []


@pytest.mark.usefixtures("small_pages")
@pytest.mark.parametrize("large", [4, 12], ids=["within-the-batch-match", "past-the-batch-match"])
async def test_a_batch_across_workspaces_keeps_each_workspace_to_its_own_subscriptions(
    app_ctx: AppContext, receiver: Receiver, large: int
) -> None:
    # The batch matches its workspaces together (one statement for a shared type and provider). One workspace
    # has more than a page of subscriptions: with 4 the shared match still holds every row (4 + 1 + 1 <= 9, the
    # batch's limit with pages of 3) and must see that it goes page by page; with 12 the shared match is past its
    # limit and each workspace is matched on its own. Either way each (event, subscription) is made once.
    small_a, large_tenant, small_b = [await make_tenant(app_ctx) for _ in range(3)]
    subs = {
        tenant.workspace_id: await subscribers(app_ctx, tenant.workspace_id, count, receiver)
        for tenant, count in ((small_a, 1), (large_tenant, large), (small_b, 1))
    }
    ids: list[str] = []
    expected: list[tuple[str, str]] = []
    for tenant in (small_a, large_tenant, small_b, small_a):
        [event_id] = await make_events(app_ctx, tenant.workspace_id, hand_off_now=False)
        ids.append(event_id)
        expected.extend((event_id, sub) for sub in subs[tenant.workspace_id])

    assert await dispatch_events(app_ctx, ids, worker=None) == len(ids)

    rows = await deliveries(app_ctx)
    assert sorted((d.event_id, d.subscription_id) for d in rows) == sorted(expected)
    assert await undispatched(app_ctx) == []
