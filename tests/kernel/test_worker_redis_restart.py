"""Regression (found by the chaos suite): a Redis restart ended every `synchook worker` process, because
arq's poll loop raises on the first connection error. The worker now closes and starts again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from synchook.crypto import generate_master_key
from synchook.queue import EmbeddedRedis, connect
from synchook.root import migrate
from tests.support.cluster import Cluster, base_env

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    # A directory of our own: stop() then start() keeps the port, and Redis stays down as long as we like.
    with EmbeddedRedis(directory=tmp_path / "redis") as server:
        yield server


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'synchook.db'}"
    migrate.upgrade(url)
    return url


async def processed(redis: EmbeddedRedis, job_id: str, *, timeout: float) -> bool:
    """Enqueue a no-op relay job and wait until a worker has run it (arq deletes the job when done)."""
    pool = await connect(redis.url)
    try:
        await pool.enqueue_job("relay_events", [], _job_id=job_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await pool.exists(f"arq:job:{job_id}"):
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await pool.aclose()


async def test_a_worker_survives_a_redis_restart_and_keeps_working(
    tmp_path: Path, database: str, redis: EmbeddedRedis
) -> None:
    env = base_env(
        SYNCHOOK_DATABASE_URL=database,
        SYNCHOOK_REDIS_URL=redis.url,
        SYNCHOOK_SECRET_KEY=generate_master_key(),
        SYNCHOOK_LOG_FORMAT="json",
        SYNCHOOK_WORKER_POLL_DELAY="0.05",
    )
    with Cluster(env, workdir=tmp_path / "procs") as cluster:
        worker = cluster.start_worker("worker")
        assert await processed(redis, "before", timeout=30), cluster.logs()

        redis.stop()
        await asyncio.sleep(2)  # the worker polls into a closed port many times
        redis.start()

        assert await processed(redis, "after", timeout=30), cluster.logs()
        assert worker.alive(), cluster.logs()
        assert "worker lost Redis" in worker.log()
