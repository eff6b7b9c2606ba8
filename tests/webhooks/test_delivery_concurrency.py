"""At most ``per_subscription_concurrency`` requests in flight to one endpoint from a worker, counting the
fan-out's inline batch and the deliver jobs together; and what waits for a slot waits as data, not as a task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from arq.worker import Worker

from synchook.context import AppContext
from tests.factories import make_tenant
from tests.factories.webhooks import deliveries, make_events, make_subscription
from tests.support.receiver import Receiver

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

LIMIT = 3
HOLD = 1.0


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"per_subscription_concurrency": LIMIT, "delivery_batch_size": 4}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def test_one_endpoint_never_has_more_than_its_concurrency_in_flight(
    app_ctx: AppContext, receiver: Receiver, make_worker: Callable[..., Worker]
) -> None:
    receiver.program("/hold", statuses=[200], delay=HOLD)
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hold"))
    events = await make_events(app_ctx, tenant.workspace_id, count=12)  # 1 inline batch + 2 deliver jobs

    run = asyncio.create_task(make_worker(burst=True).main())
    try:
        await receiver.wait_for(1, path="/hold", timeout=10)
        await asyncio.sleep(HOLD / 2)
        assert receiver.count("/hold") == LIMIT  # the rest wait for a slot
        await asyncio.wait_for(run, timeout=30)
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run

    arrivals = sorted(r.at for r in receiver.requests("/hold"))
    assert len(arrivals) == len(events)
    # Any HOLD-long window holds at most LIMIT arrivals (a little slack for the clock).
    for i, start in enumerate(arrivals):
        assert sum(1 for t in arrivals[i:] if t < start + HOLD * 0.9) <= LIMIT
    assert {d.status for d in await deliveries(app_ctx)} == {"succeeded"}


async def test_deliveries_waiting_for_their_endpoint_are_queued_not_tasks(
    app_ctx: AppContext, receiver: Receiver, make_worker: Callable[..., Worker]
) -> None:
    # A worker may hold thousands of rows for one endpoint (a relay job sends its whole first batch): each waiting
    # as a task of its own cost about 2 KB more than waiting in the endpoint's queue (webhooks.delivery.pipeline).
    waiting = 60
    receiver.program("/hold", statuses=[200], delay=HOLD)
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hold"))
    await make_events(app_ctx, tenant.workspace_id, count=waiting + LIMIT)

    during = await _tasks_while_sending(make_worker, receiver, first=LIMIT)

    assert receiver.count("/hold") == waiting + LIMIT
    # The worker's own tasks (its loop, the job, the lease's heartbeat, the recorder), the receiver's handlers and one
    # sender per slot; a task per waiting delivery would be `waiting` more.
    assert during < waiting / 2, during


@pytest.mark.parametrize("settings_overrides", [{"delivery_concurrency": 2}])
async def test_a_batch_to_many_endpoints_runs_a_sender_per_slot_not_per_endpoint(
    app_ctx: AppContext, receiver: Receiver, make_worker: Callable[..., Worker]
) -> None:
    # A batch used to start every endpoint's senders at once: a relay batch of 20 workspaces' events was 200 tasks
    # waiting for the worker's slots, and 60,000 deliveries to 10,000 workspaces took a worker to 204-232 MiB.
    endpoints = 40
    receiver.program("/hold", statuses=[200], delay=0.2)
    tenant = await make_tenant(app_ctx)
    for _ in range(endpoints):  # one delivery each
        await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hold"))
    await make_events(app_ctx, tenant.workspace_id, count=1)  # one batch: the relay job's, sent inline

    during = await _tasks_while_sending(make_worker, receiver, first=2)

    assert receiver.count("/hold") == endpoints
    assert {d.status for d in await deliveries(app_ctx)} == {"succeeded"}
    # As above: the worker's own tasks, the receiver's handlers and a sender per slot (2), not per endpoint (40).
    assert during < endpoints / 2, during


async def _tasks_while_sending(make_worker: Callable[..., Worker], receiver: Receiver, *, first: int) -> int:
    """Run a burst worker to its end; how many more tasks there were once its ``first`` requests had arrived."""
    before = len(asyncio.all_tasks())
    run = asyncio.create_task(make_worker(burst=True).main())
    try:
        await receiver.wait_for(first, path="/hold", timeout=10)
        during = len(asyncio.all_tasks()) - before
        await asyncio.wait_for(run, timeout=60)
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
    return during
