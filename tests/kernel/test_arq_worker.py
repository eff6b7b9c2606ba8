"""The worker starts the jobs of a poll in one Redis call (synchook.arq_worker): each due job once, however
many workers poll the queue, none early (jobs in progress: test_worker_queue_head.py), no WATCH per job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker, func

from synchook.context import AppContext
from synchook.enqueue import QueuedJob, enqueue_jobs
from synchook.queue import DOORBELL_CHANNEL, QUEUE_NAME, enqueue_many
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


# --- The doorbell: an idle worker waits for an enqueue instead of polling every poll_delay ---------------------------


async def _idle(redis: ArqRedis, worker: Worker) -> None:
    """Until the worker listens for the doorbell and has stopped polling (its first looks are done)."""
    async with asyncio.timeout(30):
        while (await redis.pubsub_numsub(DOORBELL_CHANNEL))[0][1] < 1:
            await asyncio.sleep(0.01)
        before, after = -1, await _polls(redis)
        while before != after:
            await asyncio.sleep(0.2)
            before, after = after, await _polls(redis)


async def _polls(redis: ArqRedis) -> int:
    """The start-jobs script's calls since the last CONFIG RESETSTAT: one per poll."""
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.fixture
async def idle_worker(redis: ArqRedis, make_worker: Callable[..., Worker]) -> AsyncIterator[Worker]:
    """A worker running in the background, past its first looks at an empty queue; no job of it may fail."""
    worker = make_worker(burst=False)
    async with running(worker):
        await _idle(redis, worker)
        yield worker
    assert worker.jobs_failed == 0


@pytest.fixture
def long_idle_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle workers wait a minute between looks unless woken: a job run sooner was woken for."""
    monkeypatch.setattr("synchook.arq_worker.IDLE_WAIT", 60.0)


@pytest.mark.usefixtures("long_idle_wait")
async def test_an_idle_worker_makes_no_poll_until_the_doorbell_rings(
    redis: ArqRedis, idle_worker: Worker, app_ctx: AppContext
) -> None:
    await redis.config_resetstat()
    await asyncio.sleep(0.3)  # arq's own loop polls every 5 ms: some 60 polls here
    assert await _polls(redis) == 0
    # Every way a job is enqueued rings: arq's enqueue (the context's), the one-round-trip script and pipeline.
    await app_ctx.enqueue("relay_events", [])
    await wait_until(lambda: idle_worker.jobs_complete >= 1, timeout=30)
    assert await enqueue_jobs(redis, [QueuedJob("relay_events", ([],))]) == [True]
    await wait_until(lambda: idle_worker.jobs_complete >= 2, timeout=30)
    await enqueue_many(redis, "relay_events", [([],)])
    await wait_until(lambda: idle_worker.jobs_complete >= 3, timeout=30)


@pytest.mark.usefixtures("long_idle_wait")
async def test_an_idle_worker_wakes_when_a_deferred_job_falls_due(idle_worker: Worker, app_ctx: AppContext) -> None:
    # The ring comes at enqueue, the job is due later: the poll it causes learns when, and the worker waits.
    await app_ctx.enqueue("relay_events", [], _defer_by=0.5)
    await wait_until(lambda: idle_worker.jobs_complete >= 1, timeout=30)


async def test_a_job_enqueued_without_a_ring_still_runs_within_the_idle_wait(
    redis: ArqRedis, idle_worker: Worker
) -> None:
    await redis.enqueue_job("relay_events", [], _queue_name=QUEUE_NAME)  # arq's own: no ring
    await wait_until(lambda: idle_worker.jobs_complete >= 1, timeout=30)


@pytest.mark.usefixtures("long_idle_wait")
async def test_a_job_ending_with_no_job_waiting_for_its_slot_makes_no_poll(
    redis: ArqRedis, idle_worker: Worker, app_ctx: AppContext
) -> None:
    await redis.config_resetstat()
    for done in range(1, 4):
        await app_ctx.enqueue("relay_events", [])
        await wait_until(lambda done=done: idle_worker.jobs_complete >= done, timeout=30)
    await _idle(redis, idle_worker)
    # One look per ring; none after each job's end (nothing came while its slot was taken).
    assert await _polls(redis) == 3


@pytest.mark.usefixtures("long_idle_wait")
async def test_a_job_enqueued_while_every_slot_is_taken_starts_when_one_frees(
    redis: ArqRedis, make_worker: Callable[..., Worker], app_ctx: AppContext
) -> None:
    release = asyncio.Event()

    async def hold(_ctx: dict[str, object]) -> None:
        await release.wait()

    worker = make_worker(burst=False, max_jobs=1)
    worker.functions["hold"] = func(hold, name="hold")
    async with running(worker):
        await _idle(redis, worker)
        await app_ctx.enqueue("hold")
        await wait_until(lambda: worker.job_counter == 1, timeout=30)
        # Rings, but the worker has no free slot: it does not take the job now, and its idle wait is a minute.
        await app_ctx.enqueue("relay_events", [])
        await asyncio.sleep(0.2)
        assert worker.jobs_complete == 0
        release.set()
        await wait_until(lambda: worker.jobs_complete >= 2, timeout=30)
    assert worker.jobs_failed == 0
