"""A batch to many endpoints runs no more senders than the worker can have requests in flight.

Each endpoint's deliveries wait in its own queue (webhooks.delivery.sending); a batch used to start every endpoint's
senders at once, so a batch to a thousand endpoints was a thousand tasks, nearly all waiting for one of the worker's
``delivery_concurrency`` slots. A worker holding the rows of 10,000 workspaces peaked at 204-232 MiB with them.
"""

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

ENDPOINTS = 40
SLOTS = 2
HOLD = 0.2


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"delivery_concurrency": SLOTS}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def test_a_batch_to_many_endpoints_runs_a_sender_per_slot_not_per_endpoint(
    app_ctx: AppContext, receiver: Receiver, make_worker: Callable[..., Worker]
) -> None:
    receiver.program("/hold", statuses=[200], delay=HOLD)
    tenant = await make_tenant(app_ctx)
    for _ in range(ENDPOINTS):  # one endpoint each: a queue of one delivery per subscription
        await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hold"))
    await make_events(app_ctx, tenant.workspace_id, count=1)  # one batch: the relay job's, sent inline
    before = len(asyncio.all_tasks())

    run = asyncio.create_task(make_worker(burst=True).main())
    try:
        await receiver.wait_for(SLOTS, path="/hold", timeout=10)
        during = len(asyncio.all_tasks()) - before
        await asyncio.wait_for(run, timeout=60)
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run

    assert receiver.count("/hold") == ENDPOINTS
    assert {d.status for d in await deliveries(app_ctx)} == {"succeeded"}
    # The worker's own tasks (its loop, the job, the lease's heartbeat, the recorder), the receiver's handlers and one
    # sender per slot; a sender per endpoint would be ENDPOINTS more.
    assert during < ENDPOINTS / 2, during
