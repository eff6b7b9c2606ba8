"""Outcomes are written as each send finishes: a slow endpoint in the same batch does not hold back the
record of the fast ones (a worker killed meanwhile would otherwise send them all again)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from arq.worker import Worker

from synchook.context import AppContext
from tests.factories import make_tenant
from tests.factories.webhooks import attempts, deliveries, make_events, make_subscription
from tests.support.receiver import Receiver

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

SLOW_REPLY = 1.5  # under the tests' 2 s delivery timeout: a success, only late


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def test_fast_outcomes_are_recorded_while_a_slow_send_in_the_same_batch_is_in_flight(
    app_ctx: AppContext, receiver: Receiver, make_worker: Callable[..., Worker]
) -> None:
    receiver.program("/slow", statuses=[200], delay=SLOW_REPLY)
    tenant = await make_tenant(app_ctx)
    fast = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/fast"))
    slow = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/slow"))
    events = await make_events(app_ctx, tenant.workspace_id, count=3)  # one fan-out batch of six

    worker = make_worker(burst=True)
    run = asyncio.create_task(worker.main())
    try:
        async with asyncio.timeout(10):
            while {d.status for d in await deliveries(app_ctx, subscription_id=fast.id)} != {"succeeded"}:
                await asyncio.sleep(0.02)
        # The slow sends have reached the receiver and are still waiting for its answer.
        assert receiver.count("/slow") == len(events)
        slow_rows = await deliveries(app_ctx, subscription_id=slow.id)
        assert {d.status for d in slow_rows} == {"pending"}
        assert all(d.lease_until is not None for d in slow_rows)
        await asyncio.wait_for(run, timeout=20)
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run

    rows = await deliveries(app_ctx)
    assert {d.status for d in rows} == {"succeeded"}
    assert len(rows) == 2 * len(events)
    for row in rows:
        assert [a.status_code for a in await attempts(app_ctx, row.id)] == [200]
    assert receiver.count("/fast") == receiver.count("/slow") == len(events)
