"""The worker starts the jobs of a poll in one Redis call (synchook.arq_worker): each due job once, however
many workers poll the queue, none early (jobs in progress: test_worker_queue_head.py), no WATCH per job."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker

from synchook.queue import QUEUE_NAME
from tests.support.workers import running, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

JOBS = 60


async def test_two_workers_start_every_due_job_once_in_one_call_per_poll(
    redis: ArqRedis, make_worker: Callable[..., Worker]
) -> None:
    for n in range(JOBS):
        await redis.enqueue_job("relay_events", [], _job_id=f"job-{n}", _queue_name=QUEUE_NAME)
    await redis.enqueue_job("relay_events", [], _job_id="later", _queue_name=QUEUE_NAME, _defer_by=600)
    workers = [make_worker(burst=False, max_jobs=7), make_worker(burst=False, max_jobs=7)]
    await redis.config_resetstat()

    async with running(workers[0]), running(workers[1]):
        await wait_until(lambda: sum(w.jobs_complete for w in workers) >= JOBS, timeout=60)

    assert sum(w.jobs_complete for w in workers) == JOBS
    assert sum(w.jobs_failed + w.jobs_retried for w in workers) == 0
    assert [m.decode() for m in await redis.zrange(QUEUE_NAME, 0, -1)] == ["later"]
    stats = await redis.info("commandstats")
    # arq's own start_jobs WATCHes each job's in-progress key (four round trips a job): none here.
    assert "cmdstat_watch" not in stats, stats.get("cmdstat_watch")
