"""Deliver jobs are enqueued in one round trip per call (synchook.queue.enqueue_many), as arq's own jobs:
a worker runs them, a deferred one waits its time, and no WATCH is paid per job."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker

from synchook.context import AppContext
from synchook.queue import QUEUE_NAME
from tests.factories import make_tenant
from tests.factories.webhooks import deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from webhooks.constants import DELIVER_TASK
from webhooks.delivery.schedule import schedule_deliveries
from webhooks.dispatch import dispatch_events

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.mark.parametrize("settings_overrides", [{"delivery_batch_size": 4}])
async def test_scheduled_batches_are_arq_jobs_enqueued_in_one_round_trip(
    app_ctx: AppContext, redis: ArqRedis, make_worker: Callable[..., Worker]
) -> None:
    async with Receiver() as receiver:
        tenant = await make_tenant(app_ctx)
        await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/ok"))
        events = await make_events(app_ctx, tenant.workspace_id, count=10, hand_off_now=False)
        await dispatch_events(app_ctx, events, worker=None)  # the rows, and their jobs (cleared below)
        await redis.flushall()
        ids = sorted(d.id for d in await deliveries(app_ctx))
        await redis.config_resetstat()

        assert await schedule_deliveries(app_ctx, ids) == 3
        assert await schedule_deliveries(app_ctx, ids[:1], defer_by=600) == 1

        stats = await redis.info("commandstats")
        assert "cmdstat_watch" not in stats, stats.get("cmdstat_watch")  # arq's enqueue_job: one per job
        assert stats["cmdstat_exec"]["calls"] == 2
        jobs = await redis.queued_jobs(queue_name=QUEUE_NAME)
        assert sorted(tuple(job.args[0]) for job in jobs if job.function == DELIVER_TASK) == sorted(
            [tuple(ids[0:4]), tuple(ids[4:8]), tuple(ids[8:10]), (ids[0],)]
        )
        [later] = [job for job in jobs if job.args[0] == [ids[0]]]
        assert later.score is not None and later.job_id is not None
        assert later.score - round(later.enqueue_time.timestamp() * 1000) == 600_000

        await redis.zrem(QUEUE_NAME, later.job_id)  # not due for 10 minutes: it would keep a burst worker up
        await make_worker().main()
        assert {d.status for d in await deliveries(app_ctx)} == {"succeeded"}
        assert receiver.count("/ok") == len(ids)
