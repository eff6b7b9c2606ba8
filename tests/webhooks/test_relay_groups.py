"""A worker's relay jobs share fan-out transactions: those that arrive while one is open go together in the next,
each event still fanned out once, and no group waits for the sends of the one before."""

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
from webhooks.delivery.runtime import WorkerContext
from webhooks.tasks import CONTEXT, relay_events


@pytest.fixture
def event_claims() -> Iterator[list[str]]:
    """The fan-out transactions' event claims (one per transaction) any engine of this process runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE EVENTS SET DISPATCHED_AT"):
            seen.append(statement)

    sa.event.listen(Engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(Engine, "before_cursor_execute", record)


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
        jobs = [await make_events(app_ctx, tenant.workspace_id, count=2, hand_off_now=False) for _ in range(3)]
        ctx = {CONTEXT: worker}
        # The first job's fan-out starts at once; the other two arrive while its transaction is open.
        claimed = await asyncio.gather(*(relay_events(ctx, ids) for ids in jobs))
        assert len(event_claims) == 2
        assert claimed == [2, 4, 4]  # each job answers with its group's count
        received = await receiver.wait_for(6)
        assert sorted(r.headers["webhook-id"] for r in received) == sorted(i for ids in jobs for i in ids)
    assert {d.status for d in await deliveries(app_ctx)} == {"succeeded"}


async def test_a_group_does_not_wait_for_the_sends_of_the_one_before(
    app_ctx: AppContext, worker: WorkerContext
) -> None:
    async with Receiver() as receiver:
        held = asyncio.Event()
        receiver.program("/held", hold=held)
        first, second = await make_tenant(app_ctx), await make_tenant(app_ctx)
        await make_subscription(app_ctx, first.workspace_id, url=receiver.url("/held"))
        await make_subscription(app_ctx, second.workspace_id, url=receiver.url("/fast"))
        ctx = {CONTEXT: worker}
        slow_job = asyncio.create_task(
            relay_events(ctx, await make_events(app_ctx, first.workspace_id, hand_off_now=False))
        )
        await receiver.wait_for(1, path="/held")  # the first fan-out committed and is sending
        fast = await make_events(app_ctx, second.workspace_id, hand_off_now=False)
        assert await relay_events(ctx, fast) == 1
        assert [r.headers["webhook-id"] for r in receiver.requests("/fast")] == fast
        assert not slow_job.done()
        held.set()
        assert await slow_job == 1


async def test_a_job_cancelled_while_it_waits_leaves_its_group_to_the_others(
    app_ctx: AppContext, worker: WorkerContext, event_claims: list[str]
) -> None:
    async with Receiver() as receiver:
        tenant = await make_tenant(app_ctx)
        await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hook"))
        jobs = [await make_events(app_ctx, tenant.workspace_id, hand_off_now=False) for _ in range(3)]
        ctx = {CONTEXT: worker}
        tasks = [asyncio.create_task(relay_events(ctx, ids)) for ids in jobs]
        await asyncio.sleep(0)  # all three have joined: the first's fan-out runs, the other two wait for it
        tasks[1].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[1], asyncio.CancelledError) and done[0] == 1 and done[2] == 2
        received = await receiver.wait_for(3)
        assert sorted(r.headers["webhook-id"] for r in received) == sorted(i for ids in jobs for i in ids)
        assert len(event_claims) == 2
