"""Regression (found by the heavy chaos run): jobs of SIGKILLed workers stay at the head of the queue,
marked in progress until their key expires, and arq read only the first 100 ready ids per poll, so a
few kills stalled every worker, sweepers included, for the in-progress timeout (5-30 minutes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker

from synchook.queue import QUEUE_NAME

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

ZOMBIES = 300  # fifteen killed workers' worth of in-flight jobs (max_jobs = 20)


async def test_jobs_behind_a_head_of_dead_workers_jobs_still_run(
    redis: ArqRedis, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(burst=False)
    for n in range(ZOMBIES):
        await redis.enqueue_job("relay_events", [], _job_id=f"zombie-{n}", _queue_name=QUEUE_NAME)
        # What a worker sets when it starts a job; SIGKILLed, it never deletes it. Set just now and with no
        # owner, the janitor leaves them for OWNERLESS_GRACE: the read limit alone must get past them.
        await redis.psetex(f"arq:in-progress:zombie-{n}", int(worker.in_progress_timeout_s * 1000), b"1")
    await asyncio.sleep(0.01)  # the probe scores after every zombie
    await redis.enqueue_job("relay_events", [], _job_id="probe", _queue_name=QUEUE_NAME)

    task = asyncio.create_task(worker.main())
    try:
        async with asyncio.timeout(20):
            while await redis.exists("arq:job:probe"):
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await redis.zcard(QUEUE_NAME) == ZOMBIES  # the zombies wait, untouched
