"""The janitor: a SIGKILLed worker's jobs run again within seconds (not when arq's in-progress key expires,
30 min later), a live worker's long job is left alone, and the heartbeat outlives a Redis flush."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import Job
from arq.worker import Worker

from synchook.context import AppContext
from synchook.janitor import (
    HEARTBEAT_TTL,
    JANITOR_INTERVAL,
    JOB_OWNER_KEY_PREFIX,
    OWNERLESS_GRACE,
    WORKER_KEY_PREFIX,
    free_stale_jobs,
)
from synchook.queue import QUEUE_NAME, due_job_ids
from synchook.settings import Settings
from tests.factories import make_tenant
from tests.factories.webhooks import make_events, make_subscription
from tests.support.cluster import Cluster, base_env
from tests.support.receiver import Receiver
from tests.support.workers import running
from webhooks.dispatch import dispatch_events

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")]

TIMEOUT_S = 1810.0  # arq's in-progress timeout with the default sync job timeout (1800 s + 10 s)
# A dead worker's job is free once its heartbeat has expired and the janitor's next turn came.
FREED_WITHIN = HEARTBEAT_TTL + 2 * JANITOR_INTERVAL + 2
SENDING = {"deliver"}


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    # The janitor lives in Redis: one database backend is enough.
    path = tmp_path / "synchook.db"
    path.write_bytes(sqlite_template.read_bytes())
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


def worker_cluster(settings: Settings, workdir: Path) -> Cluster:
    assert settings.secret_key is not None and settings.redis_url is not None
    env = base_env(
        SYNCHOOK_DATABASE_URL=settings.database_url,
        SYNCHOOK_REDIS_URL=settings.redis_url,
        SYNCHOOK_SECRET_KEY=settings.secret_key.get_secret_value(),
        SYNCHOOK_ALLOW_PRIVATE_TARGETS="true",
        SYNCHOOK_RELAY_GRACE_SECONDS="0",
        SYNCHOOK_DELIVERY_TIMEOUT="30",  # the receiver's hang, not the client's timeout, ends the send
        SYNCHOOK_WORKER_POLL_DELAY="0.05",
        SYNCHOOK_LOG_FORMAT="text",
    )
    return Cluster(env, workdir=workdir)


async def sending_jobs(redis: ArqRedis) -> list[str]:
    """The deliver jobs in progress (not the crons a worker also runs)."""
    found = []
    for job_id in await due_job_ids(redis, limit=100):
        info = await Job(job_id, redis, _queue_name=QUEUE_NAME, _deserializer=redis.job_deserializer).info()
        if info is not None and info.function in SENDING and await redis.exists(in_progress_key_prefix + job_id):
            found.append(job_id)
    return found


async def queue_a_delivery(app_ctx: AppContext, workspace_id: str) -> None:
    """An event's delivery, queued for a deliver job: one that stays in progress while it sends (a relay job ends
    once its fan-out commits, its inline sends going on after it)."""
    events = await make_events(app_ctx, workspace_id, hand_off_now=False)
    await dispatch_events(app_ctx, events, worker=None)


async def owner_of(redis: ArqRedis, job_id: str) -> str | None:
    owner = await redis.get(JOB_OWNER_KEY_PREFIX + job_id)
    return owner.decode() if owner is not None else None


async def start_job(redis: ArqRedis, job_id: str, *, age: float, owner: str | None = None) -> None:
    """A due job as a worker leaves it when it starts it: ``age`` seconds ago, recorded by ``owner``."""
    await redis.enqueue_job("relay_events", [], _job_id=job_id, _queue_name=QUEUE_NAME)
    await redis.psetex(in_progress_key_prefix + job_id, int((TIMEOUT_S - age) * 1000), b"1")
    if owner is not None:
        await redis.set(JOB_OWNER_KEY_PREFIX + job_id, owner)
    await asyncio.sleep(0.002)  # arq rounds the score to the nearest millisecond: let it come due


# --- Which jobs are stale ---------------------------------------------------------------------------


async def test_a_job_whose_owner_stopped_beating_is_freed(redis: ArqRedis) -> None:
    await start_job(redis, "orphan", age=1, owner="dead-worker")
    assert await free_stale_jobs(redis, in_progress_timeout_s=TIMEOUT_S) == ["orphan"]
    assert not await redis.exists(in_progress_key_prefix + "orphan", JOB_OWNER_KEY_PREFIX + "orphan")
    assert await redis.zscore(QUEUE_NAME, "orphan") is not None  # still queued: a worker runs it again


async def test_a_job_whose_owner_beats_is_kept_however_old(redis: ArqRedis) -> None:
    await start_job(redis, "long", age=TIMEOUT_S - 5, owner="live-worker")
    await redis.set(WORKER_KEY_PREFIX + "live-worker", b"1", px=int(HEARTBEAT_TTL * 1000))
    assert await free_stale_jobs(redis, in_progress_timeout_s=TIMEOUT_S) == []
    assert await owner_of(redis, "long") == "live-worker"


async def test_a_job_without_owner_is_freed_only_past_the_grace(redis: ArqRedis) -> None:
    # Killed between arq's claim and the job's first step: nothing names the owner, only the key's age tells.
    await start_job(redis, "just-claimed", age=1)
    await start_job(redis, "long-unowned", age=OWNERLESS_GRACE + 1)
    assert await free_stale_jobs(redis, in_progress_timeout_s=TIMEOUT_S) == ["long-unowned"]
    assert await redis.exists(in_progress_key_prefix + "just-claimed")


async def test_jobs_waiting_or_not_yet_due_are_not_touched(redis: ArqRedis) -> None:
    await redis.enqueue_job("relay_events", [], _job_id="waiting", _queue_name=QUEUE_NAME)
    await redis.enqueue_job("relay_events", [], _job_id="later", _queue_name=QUEUE_NAME, _defer_by=60)
    await redis.psetex(in_progress_key_prefix + "later", 1000, b"1")  # as arq would never leave it; still not due
    await asyncio.sleep(0.002)
    assert await free_stale_jobs(redis, in_progress_timeout_s=TIMEOUT_S) == []
    assert await redis.exists(in_progress_key_prefix + "later")


# --- Real worker processes --------------------------------------------------------------------------


async def test_a_killed_workers_job_runs_again_within_seconds(
    app_ctx: AppContext,
    settings: Settings,
    redis: ArqRedis,
    receiver: Receiver,
    make_worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    receiver.program("/hang", delay=5)  # holds the job in progress until the worker is killed
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hang"))
    with worker_cluster(settings, tmp_path / "procs") as cluster:
        doomed = cluster.start_worker("doomed")
        await queue_a_delivery(app_ctx, tenant.workspace_id)
        await receiver.wait_for(1, path="/hang", timeout=30)
        stuck = await sending_jobs(redis)
        assert stuck, cluster.logs()
        owners = {await owner_of(redis, job_id) for job_id in stuck}
        assert len(owners) == 1 and None not in owners, owners
        assert cluster.kill(doomed) == -9
    # Left to arq, these would wait for their in-progress keys to expire.
    assert min([await redis.pttl(in_progress_key_prefix + job_id) for job_id in stuck]) > 25 * 60 * 1000

    killed_at = time.monotonic()
    async with running(make_worker(burst=False)), asyncio.timeout(30):
        while await redis.exists(*(job_key_prefix + job_id for job_id in stuck)):
            await asyncio.sleep(0.1)
    assert time.monotonic() - killed_at < FREED_WITHIN


async def test_a_live_workers_long_job_is_left_alone(
    app_ctx: AppContext,
    settings: Settings,
    redis: ArqRedis,
    receiver: Receiver,
    make_worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    hang = HEARTBEAT_TTL + 4 * JANITOR_INTERVAL  # long enough for a dead worker's job to be freed twice over
    receiver.program("/slow", delay=hang)
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/slow"))
    with worker_cluster(settings, tmp_path / "procs") as cluster:
        cluster.start_worker("busy")
        await queue_a_delivery(app_ctx, tenant.workspace_id)
        (request,) = await receiver.wait_for(1, path="/slow", timeout=30)
        (job_id,) = await sending_jobs(redis)
        owner = await owner_of(redis, job_id)
        assert owner is not None, cluster.logs()

        # Another worker's janitor runs all along; the busy worker's own takes turns with it.
        async with running(make_worker(burst=False)):
            left = await redis.pttl(in_progress_key_prefix + job_id)
            while time.time() < request.at + hang - 1:
                # The same in-progress key, owned by the same worker: never freed, never started again.
                now_left = await redis.pttl(in_progress_key_prefix + job_id)
                assert 0 < now_left <= left, cluster.logs()
                assert await owner_of(redis, job_id) == owner
                left = now_left
                await asyncio.sleep(0.25)
            async with asyncio.timeout(15):
                while await redis.exists(job_key_prefix + job_id):  # the busy worker finishes it
                    await asyncio.sleep(0.1)
            async with asyncio.timeout(15):
                while await owner_of(redis, job_id) is not None:  # forgotten by the busy worker's next beat
                    await asyncio.sleep(0.1)
        assert "janitor freed" not in cluster.logs()
    assert receiver.count("/slow") == 1


async def test_the_heartbeat_comes_back_after_a_flush(redis: ArqRedis, make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(burst=False)
    async with running(worker), asyncio.timeout(10):
        while "worker_id" not in worker.ctx or not await redis.exists(WORKER_KEY_PREFIX + worker.ctx["worker_id"]):
            await asyncio.sleep(0.05)
        key = WORKER_KEY_PREFIX + worker.ctx["worker_id"]
        await redis.flushall()
        while not await redis.exists(key):
            await asyncio.sleep(0.05)
