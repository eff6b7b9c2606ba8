"""A worker's relay jobs share fan-out transactions: those that arrive while one is open go together in the next,
each event still fanned out once, and no group waits for the sends of the one before. A relay job sends the rows
of its first batch itself, within the worker's inline budget; the rest go to deliver jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from synchook.context import AppContext
from tests.factories import make_tenant
from tests.factories.webhooks import deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from tests.support.workers import sends_finished
from webhooks.delivery.fanouts import TRANSACTIONS
from webhooks.delivery.runtime import INLINE_ROWS, WorkerContext
from webhooks.tasks import CONTEXT, relay_events


def _statements(prefix: str) -> Iterator[list[str]]:
    """The statements starting with ``prefix`` (upper case) that any engine of this process runs meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(prefix):
            seen.append(statement)

    sa.event.listen(Engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(Engine, "before_cursor_execute", record)


@pytest.fixture
def event_claims() -> Iterator[list[str]]:
    """The fan-out transactions' event claims (one per transaction)."""
    yield from _statements("UPDATE EVENTS SET DISPATCHED_AT")


@pytest.fixture
def delivery_claims() -> Iterator[list[str]]:
    """Claims of deliveries by deliver jobs (an update of their lease)."""
    yield from _statements("UPDATE DELIVERIES SET LEASE_UNTIL")


@pytest.fixture
async def worker(app_ctx: AppContext) -> Any:
    worker = WorkerContext.open(app_ctx)
    yield worker
    await worker.close()


async def test_relay_jobs_that_arrive_during_a_fan_out_share_the_next_one(
    app_ctx: AppContext, worker: WorkerContext, event_claims: list[str]
) -> None:
    async with Receiver() as receiver:
        tenant = await make_tenant(app_ctx)
        await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hook"))
        jobs = [
            await make_events(app_ctx, tenant.workspace_id, count=2, hand_off_now=False)
            for _ in range(TRANSACTIONS + 2)
        ]
        ctx = {CONTEXT: worker}
        # The first jobs' fan-outs start at once, one transaction each; the last two arrive while those are open.
        claimed = await asyncio.gather(*(relay_events(ctx, ids) for ids in jobs))
        assert len(event_claims) == TRANSACTIONS + 1
        assert claimed == [2] * TRANSACTIONS + [4, 4]  # each job answers with its group's count
        received = await receiver.wait_for(2 * len(jobs))
        assert sorted(r.headers["webhook-id"] for r in received) == sorted(i for ids in jobs for i in ids)
        await sends_finished(worker)
    assert {d.status for d in await deliveries(app_ctx)} == {"succeeded"}


async def test_a_group_does_not_wait_for_the_sends_of_the_one_before(
    app_ctx: AppContext, worker: WorkerContext
) -> None:
    async with Receiver() as receiver:
        held = asyncio.Event()
        receiver.program("/held", hold=held)
        ctx = {CONTEXT: worker}
        slow_jobs, held_subscriptions = [], []
        for n in range(TRANSACTIONS):  # as many as may be open, each held by its send
            tenant = await make_tenant(app_ctx)
            sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/held"))
            held_subscriptions.append(sub.id)
            events = await make_events(app_ctx, tenant.workspace_id, hand_off_now=False)
            slow_jobs.append(asyncio.create_task(relay_events(ctx, events)))
            await receiver.wait_for(n + 1, path="/held")  # its fan-out committed and is sending
        tenant = await make_tenant(app_ctx)
        await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/fast"))
        fast = await make_events(app_ctx, tenant.workspace_id, hand_off_now=False)
        assert await relay_events(ctx, fast) == 1
        assert [r.headers["webhook-id"] for r in await receiver.wait_for(1, path="/fast")] == fast
        if app_ctx.db.dialect == "postgresql":
            # The held jobs ended when their fan-outs committed; their sends go on, on the worker.
            assert await asyncio.gather(*slow_jobs) == [1] * TRANSACTIONS
            sending = [d for d in await deliveries(app_ctx) if d.subscription_id in held_subscriptions]
            assert [(d.status, d.lease_until is not None) for d in sending] == [("pending", True)] * TRANSACTIONS
            held.set()
        else:
            # SQLite: a relay job waits for its inline sends (webhooks.dispatch says why).
            assert not any(job.done() for job in slow_jobs)
            held.set()
            assert await asyncio.gather(*slow_jobs) == [1] * TRANSACTIONS
        await sends_finished(worker)
    assert {d.status for d in await deliveries(app_ctx)} == {"succeeded"}


async def test_a_job_cancelled_while_it_waits_leaves_its_group_to_the_others(
    app_ctx: AppContext, worker: WorkerContext, event_claims: list[str]
) -> None:
    async with Receiver() as receiver:
        tenant = await make_tenant(app_ctx)
        await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hook"))
        jobs = [await make_events(app_ctx, tenant.workspace_id, hand_off_now=False) for _ in range(TRANSACTIONS + 2)]
        ctx = {CONTEXT: worker}
        tasks = [asyncio.create_task(relay_events(ctx, ids)) for ids in jobs]
        await asyncio.sleep(0)  # all have joined: the first fan-outs run, the last two jobs wait for them together
        tasks[-2].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[-2], asyncio.CancelledError)
        assert done[:-2] == [1] * TRANSACTIONS and done[-1] == 2
        received = await receiver.wait_for(len(jobs))
        assert sorted(r.headers["webhook-id"] for r in received) == sorted(i for ids in jobs for i in ids)
        assert len(event_claims) == TRANSACTIONS + 1


@pytest.mark.parametrize("settings_overrides", [{"delivery_batch_size": 20}])
async def test_a_relay_job_sends_its_whole_batch_itself_with_no_claim(
    app_ctx: AppContext, worker: WorkerContext, delivery_claims: list[str]
) -> None:
    """More rows than a deliver job takes (20): all inserted leased and sent by the relay job, none claimed."""
    async with Receiver() as receiver:
        events = await _relay_new_events(app_ctx, worker, receiver, 60)
        received = await receiver.wait_for(60)
        await sends_finished(worker)
    assert sorted(r.headers["webhook-id"] for r in received) == sorted(events)
    assert {d.status for d in await deliveries(app_ctx)} == {"succeeded"}
    assert delivery_claims == []
    assert worker.runtime.inline_free == INLINE_ROWS  # every row taken was given back


async def test_past_the_inline_budget_a_relay_job_leaves_its_rows_to_deliver_jobs(
    app_ctx: AppContext, worker: WorkerContext
) -> None:
    """With 10 of the budget left, 10 rows are sent by the relay job and 50 are queued; the 10 come back after."""
    worker.runtime.inline_free = 10
    async with Receiver() as receiver:
        await _relay_new_events(app_ctx, worker, receiver, 60)
        await receiver.wait_for(10)
        await sends_finished(worker)
    rows = await deliveries(app_ctx)
    assert sorted(d.status for d in rows) == ["pending"] * 50 + ["succeeded"] * 10
    assert all(d.lease_until is None for d in rows if d.status == "pending")  # queued for deliver jobs, unleased
    assert worker.runtime.inline_free == 10


async def _relay_new_events(app_ctx: AppContext, worker: WorkerContext, receiver: Receiver, count: int) -> list[str]:
    """``count`` events of a new workspace with one subscription at ``receiver``, fanned out by one relay job."""
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hook"))
    events = await make_events(app_ctx, tenant.workspace_id, count=count, hand_off_now=False)
    assert await relay_events({CONTEXT: worker}, events) == count
    return events
