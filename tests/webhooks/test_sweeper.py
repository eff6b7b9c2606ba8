"""The delivery sweeper holds back only for a real backlog: jobs in progress (a killed worker's included,
until the janitor frees them) do not count. Found by the chaos run: they did, and after a few kills the
sweeper never ran again while 2,247 deliveries whose jobs had died sat pending and every worker idled."""

from __future__ import annotations

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from synchook.context import AppContext
from synchook.queue import QUEUE_NAME
from tests.factories import make_tenant
from tests.factories.webhooks import make_events, make_subscription
from webhooks.dispatch import dispatch_events
from webhooks.sweeper import MAX_BATCHES_PER_SWEEP, sweep_deliveries

QUEUE_HEAD = 3 * MAX_BATCHES_PER_SWEEP


async def pending_without_jobs(app_ctx: AppContext, redis: ArqRedis, count: int) -> None:
    """``count`` open deliveries, due and unleased, whose jobs are gone."""
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/never")
    events = await make_events(app_ctx, tenant.workspace_id, count=count, hand_off_now=False)
    assert await dispatch_events(app_ctx, events, worker=None) == count
    await redis.flushall()


async def fill_queue_head(redis: ArqRedis, *, in_progress: bool) -> None:
    for n in range(QUEUE_HEAD):
        await redis.enqueue_job("relay_events", [], _job_id=f"head-{n}", _queue_name=QUEUE_NAME)
        if in_progress:
            # What a SIGKILLed worker leaves: marked in progress for the in-progress timeout (30 min).
            await redis.psetex(in_progress_key_prefix + f"head-{n}", 1_800_000, b"1")


async def test_a_queue_head_of_jobs_in_progress_does_not_stop_the_sweep(app_ctx: AppContext, redis: ArqRedis) -> None:
    await pending_without_jobs(app_ctx, redis, 3)
    await fill_queue_head(redis, in_progress=True)
    assert await sweep_deliveries(app_ctx) == 3


async def test_a_backlog_waiting_for_workers_holds_the_sweep_back(app_ctx: AppContext, redis: ArqRedis) -> None:
    await pending_without_jobs(app_ctx, redis, 3)
    await fill_queue_head(redis, in_progress=False)
    assert await sweep_deliveries(app_ctx) == 0
