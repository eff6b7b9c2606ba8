"""Jobs that do not wait on sends they need not wait on (webhooks.delivery.pipeline.run): a deliver job ends once only
slow endpoints' requests are left to it, and a relay job once its fan-out has committed; those sends finish on the
worker, their lease kept and their outcomes recorded. A hanging endpoint's requests otherwise held their jobs, and
with them the worker's job slots that healthy endpoints' deliveries need."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from synchook.context import AppContext
from tests.factories import make_tenant
from tests.factories.webhooks import deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from tests.support.workers import sends_finished
from webhooks.delivery.pipeline import deliver
from webhooks.delivery.runtime import INLINE_ROWS, WorkerContext
from webhooks.dispatch import dispatch_events

TIMEOUT = 2.0
TIMED_OUT = f"timeout: no complete response within {TIMEOUT:g}s"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"delivery_timeout": TIMEOUT}


async def test_a_deliver_job_left_only_a_hanging_endpoint_ends_and_its_requests_are_recorded_after(
    app_ctx: AppContext,
) -> None:
    async with Receiver() as receiver:
        answer = asyncio.Event()
        receiver.program("/hang", hold=answer)  # answers only after the timeout
        tenant = await make_tenant(app_ctx)
        hanging = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hang"))
        healthy = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/quick"))
        events = await make_events(app_ctx, tenant.workspace_id, count=3, hand_off_now=False)
        await dispatch_events(app_ctx, events, worker=None)  # queued, as for a deliver job
        worker = WorkerContext.open(app_ctx)
        try:
            # Returns once /hang has turned slow (half the timeout), its requests still in flight.
            assert await deliver(worker, [d.id for d in await deliveries(app_ctx)]) == 3
            assert worker.detached is not None and len(worker.detached) == 1
            assert receiver.count("/hang") == 3
            assert {d.status for d in await deliveries(app_ctx, subscription_id=healthy.id)} == {"succeeded"}
            waiting = await deliveries(app_ctx, subscription_id=hanging.id)
            assert [(d.status, d.attempt_count) for d in waiting] == [("pending", 0)] * 3
            assert all(d.lease_until is not None for d in waiting)  # still this worker's
        finally:
            await worker.close()  # waits for the batch left behind: its requests time out and are recorded
            answer.set()
    timed_out = await deliveries(app_ctx, subscription_id=hanging.id)
    assert [(d.status, d.attempt_count, d.last_error) for d in timed_out] == [("failed", 1, TIMED_OUT)] * 3
    assert all(d.lease_until is None for d in timed_out)


async def test_a_relay_job_ends_when_its_fan_out_commits_and_its_inline_sends_go_on(app_ctx: AppContext) -> None:
    if app_ctx.db.dialect != "postgresql":
        pytest.skip("SQLite: a relay job waits for its inline sends (webhooks.dispatch says why)")
    async with Receiver() as receiver:
        answer = asyncio.Event()
        receiver.program("/held", hold=answer)
        tenant = await make_tenant(app_ctx)
        await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/held"))
        events = await make_events(app_ctx, tenant.workspace_id, count=4, hand_off_now=False)
        worker = WorkerContext.open(app_ctx)
        try:
            assert await dispatch_events(app_ctx, events, worker=worker) == 4
            await receiver.wait_for(4, path="/held")
            assert worker.detached is not None and len(worker.detached) == 1
            assert worker.runtime.inline_free == INLINE_ROWS - 4  # held until sent
            answer.set()
            await sends_finished(worker)
            assert worker.runtime.inline_free == INLINE_ROWS
        finally:
            answer.set()
            await worker.close()
    assert {d.status for d in await deliveries(app_ctx)} == {"succeeded"}


async def test_a_burst_worker_waits_for_every_send(app_ctx: AppContext) -> None:
    # A burst worker stops once its queue is empty: a batch finishing after its job would enqueue its retries too late.
    async with Receiver() as receiver:
        answer = asyncio.Event()
        receiver.program("/hang", hold=answer)
        tenant = await make_tenant(app_ctx)
        hanging = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hang"))
        events = await make_events(app_ctx, tenant.workspace_id, count=1, hand_off_now=False)
        worker = WorkerContext.open(app_ctx, detach=False)
        try:
            await dispatch_events(app_ctx, events, worker=worker)
            [row] = await deliveries(app_ctx, subscription_id=hanging.id)
            assert (row.attempt_count, row.last_error, row.lease_until) == (1, TIMED_OUT, None)  # before the return
        finally:
            answer.set()
            await worker.close()
